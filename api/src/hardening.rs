//! Process hardening at start-up: no core dumps.
//!
//! SECURITY: the API process holds the master keys (and, briefly, decrypted
//! tokens) in memory. `PR_SET_DUMPABLE = 0` keeps them out of core dumps and
//! makes `/proc/<pid>/mem`, `environ` and ptrace attach unavailable to other
//! processes of the same user (the `/proc/<pid>` files become root's);
//! `RLIMIT_CORE = 0` also stops a dump where `core_pattern` pipes to a
//! helper that ignores the dumpable flag.

/// Makes this process non-dumpable and sets its core size limit to 0.
/// Called first thing by every `otobot` command (each may hold keys).
pub fn forbid_core_dumps() -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: plain system calls with valid arguments.
        if unsafe { libc::setrlimit(libc::RLIMIT_CORE, &limit) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: PR_SET_DUMPABLE takes one integer argument.
        if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn after_start_up_the_process_is_not_dumpable_and_has_no_core_limit() {
        forbid_core_dumps().unwrap();
        // SAFETY: plain system calls.
        assert_eq!(unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) }, 0);
        let mut limit = libc::rlimit {
            rlim_cur: 1,
            rlim_max: 1,
        };
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_CORE, &mut limit) }, 0);
        assert_eq!((limit.rlim_cur, limit.rlim_max), (0, 0));
    }
}
