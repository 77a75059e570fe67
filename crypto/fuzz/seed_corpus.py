#!/usr/bin/env python3
"""Seeds corpus/parse and corpus/open from the legacy fixture (stored values
written by the previous implementation): run once before the first fuzz run.
  python3 crypto/fuzz/seed_corpus.py"""
import base64
import hashlib
import os

here = os.path.dirname(os.path.abspath(__file__))
fixture = os.path.join(here, '..', 'tests', 'fixtures', 'legacy-6933b8c.tsv')


def put(target, data):
    d = os.path.join(here, 'corpus', target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, hashlib.sha1(data).hexdigest()), 'wb') as f:
        f.write(data)


with open(fixture, encoding='utf-8') as f:
    rows = [line.rstrip('\n').split('\t') for line in f][1:]
n = 0
for version, key_hex, aad, plaintext_b64, stored in rows:
    if len(stored) > 600:
        continue
    put('parse', stored.encode())
    # open, mode 0: associated data, 0xff, a stored value (another key: rejected).
    put('open', b'\x00' + aad.encode() + b'\xff' + stored.encode())
    # open, mode 1: associated data, 0xff, a plaintext to seal.
    put('open', b'\x01' + aad.encode() + b'\xff' + base64.b64decode(plaintext_b64))
    n += 1
print(f'{n} seeds per target')
