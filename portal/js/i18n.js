// The portal's words, in English and French. The language is the visitor's
// choice (kept in this browser), else the browser's preference, else English.

const STRINGS = {
  en: {
    'app.name': 'Otobot',
    'app.skip': 'Skip to content',
    'app.nav': 'Main',
    'app.language': 'Language',
    'app.signedInAs': 'Signed in as {email}',
    'app.logout': 'Log out',
    'app.loggedOut': 'You are logged out.',
    'app.loading': 'Loading…',
    'app.footer': 'Otobot keeps your connected accounts encrypted and records every use of them.',
    'app.error': 'Something went wrong: {message}',
    'app.retryIn': 'Too many requests: try again in {seconds} s.',
    'app.forbidden': 'You are not allowed to do that.',
    'app.unavailable': 'The service is unavailable right now. Try again in a moment.',
    'app.network': 'The server could not be reached. Check your connection and try again.',
    'app.noJs': 'The Otobot portal needs JavaScript.',

    'nav.services': 'Services',
    'nav.connections': 'My connections',
    'nav.history': 'Access history',
    'nav.grants': 'Grants',
    'nav.users': 'Users',

    'login.title': 'Sign in',
    'login.intro': 'Sign in to connect your accounts and see who used them.',
    'login.email': 'Email',
    'login.password': 'Password',
    'login.submit': 'Sign in',
    'login.busy': 'Signing in…',
    'login.invalid': 'Wrong email or password.',
    'login.expired': 'Your session has ended. Sign in again.',
    'login.required': 'Enter your email and your password.',

    'services.title': 'Services',
    'services.intro': 'Connect an account once; your workflows then use it on your behalf, and every use is recorded in your access history.',
    'services.filter': 'Filter services',
    'services.none': 'No service matches.',
    'services.oauth': 'Sign-in with the provider (OAuth)',
    'services.apiKey': 'API key',
    'services.connect': 'Connect {service}',
    'services.connectShort': 'Connect',
    'services.connecting': 'Opening {service}…',
    'services.connected': '{count} connected',
    'services.notConfigured': 'An administrator has to configure these services before they can be connected.',
    'services.unavailable': 'Not available on this server ({count})',
    'services.useKey': 'Use an API key',
    'services.useKeyLabel': 'Use an API key for {service}',
    'services.keyLabel': 'API key for {service}',
    'services.keyHint': 'Stored encrypted; nobody can display it again.',
    'services.labelLabel': 'Label (optional)',
    'services.labelHint': 'To tell several accounts of one service apart, e.g. "work".',
    'services.saveKey': 'Save the key',
    'services.keySaved': '{service}: API key saved.',
    'services.keyRequired': 'Enter the API key.',

    'connections.title': 'My connections',
    'connections.intro': 'The accounts your workflows may use. Disconnecting one revokes it at the provider when the provider allows it.',
    'connections.empty': 'You have no connection yet.',
    'connections.goServices': 'Connect a service',
    'connections.service': 'Service',
    'connections.account': 'Account',
    'connections.label': 'Label',
    'connections.status': 'Status',
    'connections.expiry': 'Token expiry',
    'connections.actions': 'Actions',
    'connections.reconnect': 'Reconnect',
    'connections.reconnectLabel': 'Reconnect {service}',
    'connections.disconnect': 'Disconnect',
    'connections.disconnectLabel': 'Disconnect {service}',
    'connections.confirmTitle': 'Disconnect {service}?',
    'connections.confirmBody': 'Workflows will no longer be able to use this account. You can connect it again later.',
    'connections.cancel': 'Cancel',
    'connections.disconnected': '{service} disconnected.',
    'connections.revoked': 'The access was revoked at the provider.',
    'connections.notRevoked': 'It could not be revoked at the provider ({reason}); revoke it there too if you can.',
    'connections.oauthSuccess': '{service} is connected.',
    'connections.oauthError': 'The connection failed: {reason}.',
    'connections.never': 'No expiry',
    'connections.expired': 'Expired',
    'connections.expires': '{when}',
    'status.active': 'Active',
    'status.expired': 'Expired: reconnect',
    'status.revoked': 'Revoked',

    'oauthError.invalid_state': 'the link was already used or is unknown',
    'oauthError.state_expired': 'it took too long, start again',
    'oauthError.provider_error': 'the provider refused ({reason})',
    'oauthError.token_exchange_failed': 'the provider did not issue a token',
    'oauthError.missing_code': 'the provider sent no code',
    'oauthError.provider_not_configured': 'this service is not configured',
    'oauthError.store_failed': 'the account could not be saved',
    'oauthError.server_error': 'a server error occurred',

    'history.title': 'Access history',
    'history.intro': 'Every time a workflow, a service or an administrator read one of your secrets, or tried to. Nobody else can see your history here.',
    'history.show': 'Show',
    'history.reads': 'Reads of my secrets',
    'history.all': 'Everything',
    'history.empty': 'Nothing yet.',
    'history.when': 'When',
    'history.what': 'What',
    'history.service': 'Service',
    'history.caller': 'Caller',
    'history.workflow': 'Workflow',
    'history.grant': 'Grant',
    'history.request': 'Request id',
    'history.more': 'Show older entries',
    'history.loadedMore': '{count} older entries shown.',
    'history.none': '—',
    'history.trusted': 'none (trusted caller)',
    'history.forRevocation': 'to revoke it at the provider',

    'action.credential_read': 'Secret read',
    'action.credential_refused': 'Refused: no valid grant',
    'action.grant_created': 'Grant given',
    'action.grant_revoked': 'Grant revoked',
    'action.grant_shortened': 'Grant shortened',
    'action.credential_revealed': 'Revealed by a database administrator',
    'action.credential_expired': 'Refused: the connection has expired',
    'action.credential_not_found': 'Attempt: no such connection',
    'action.decrypt_failed': 'Read failed: the secret did not decrypt',
    'action.connection_created': 'Connected',
    'action.connection_deactivated': 'Disconnected',
    'action.connection_updated': 'Connection updated',
    'action.tokens_updated': 'Tokens replaced',
    'action.tokens_refreshed': 'Token refreshed',
    'action.status_changed': 'Status changed',
    'action.oauth_started': 'Connection started',
    'action.refresh_failed': 'Refresh failed',
    'action.login_succeeded': 'Signed in',
    'action.user_created': 'Account created',
    'action.user_deactivated': 'Account deactivated',

    'source.n8n': 'n8n (workflows)',
    'source.tooljet': 'ToolJet',
    'source.portal': 'This portal',
    'source.oauth': 'Connection flow',
    'source.refresher': 'Token refresher',
    'source.cli': 'Command line',
    'source.sql': 'Database',
    'source.otobot': 'Otobot itself',

    'grants.title': 'Grants',
    'grants.intro': 'A standing grant lets one scheduled workflow read the secrets of the services you choose, until it expires or you revoke it. Workflows you start yourself get a short-lived grant automatically.',
    'grants.unavailable': 'This server does not support grants yet.',
    'grants.empty': 'You have no standing grant.',
    'grants.create': 'New standing grant',
    'grants.workflow': 'Workflow',
    'grants.workflowHint': 'The name of the scheduled workflow, as in n8n.',
    'grants.services': 'Services it may read',
    'grants.expires': 'Expires on',
    'grants.submit': 'Create the grant',
    'grants.created': 'Grant created. Copy it now: it is shown only once.',
    'grants.token': 'Grant token',
    'grants.copy': 'Copy',
    'grants.copied': 'Copied.',
    'grants.status': 'Status',
    'grants.createdAt': 'Created',
    'grants.revoke': 'Revoke',
    'grants.revokeLabel': 'Revoke the grant of {workflow}',
    'grants.confirmTitle': 'Revoke the grant of {workflow}?',
    'grants.confirmBody': 'The workflow will no longer be able to read your secrets.',
    'grants.revoked': 'Grant revoked.',
    'grants.active': 'Active',
    'grants.revokedStatus': 'Revoked',
    'grants.expiredStatus': 'Expired',
    'grants.needService': 'Choose at least one service.',

    'users.title': 'Users of {company}',
    'users.intro': 'People of your company who can connect their accounts. Deactivating a user disconnects all their accounts at once.',
    'users.email': 'Email',
    'users.role': 'Role',
    'users.status': 'Status',
    'users.createdAt': 'Created',
    'users.actions': 'Actions',
    'users.you': 'you',
    'users.active': 'Active',
    'users.inactive': 'Deactivated',
    'users.deactivate': 'Deactivate',
    'users.deactivateLabel': 'Deactivate {email}',
    'users.confirmTitle': 'Deactivate {email}?',
    'users.confirmBody': 'They can no longer sign in, and every account they connected is disconnected.',
    'users.deactivated': '{email} deactivated.',
    'users.create': 'Add a user',
    'users.password': 'Initial password',
    'users.passwordHint': 'At least 12 characters. Give it to them by a safe channel.',
    'users.roleUser': 'User',
    'users.roleAdmin': 'Administrator',
    'users.submit': 'Add the user',
    'users.created': '{email} added.',
    'users.exists': 'This email is already in use.',
    'users.weak': 'The password must be at least 12 characters.',
    'users.invalidEmail': 'This email address is not valid.',
  },
  fr: {
    'app.name': 'Otobot',
    'app.skip': 'Aller au contenu',
    'app.nav': 'Principale',
    'app.language': 'Langue',
    'app.signedInAs': 'Connecté·e : {email}',
    'app.logout': 'Se déconnecter',
    'app.loggedOut': 'Vous êtes déconnecté·e.',
    'app.loading': 'Chargement…',
    'app.footer': 'Otobot garde vos comptes connectés chiffrés et enregistre chacune de leurs utilisations.',
    'app.error': 'Une erreur est survenue : {message}',
    'app.retryIn': 'Trop de requêtes : réessayez dans {seconds} s.',
    'app.forbidden': 'Vous n’avez pas le droit de faire cela.',
    'app.unavailable': 'Le service est indisponible pour le moment. Réessayez dans un instant.',
    'app.network': 'Le serveur est injoignable. Vérifiez votre connexion et réessayez.',
    'app.noJs': 'Le portail Otobot a besoin de JavaScript.',

    'nav.services': 'Services',
    'nav.connections': 'Mes connexions',
    'nav.history': 'Historique d’accès',
    'nav.grants': 'Autorisations',
    'nav.users': 'Utilisateurs',

    'login.title': 'Connexion',
    'login.intro': 'Connectez-vous pour relier vos comptes et voir qui les a utilisés.',
    'login.email': 'Adresse e-mail',
    'login.password': 'Mot de passe',
    'login.submit': 'Se connecter',
    'login.busy': 'Connexion…',
    'login.invalid': 'Adresse e-mail ou mot de passe incorrect.',
    'login.expired': 'Votre session a pris fin. Reconnectez-vous.',
    'login.required': 'Saisissez votre adresse e-mail et votre mot de passe.',

    'services.title': 'Services',
    'services.intro': 'Reliez un compte une seule fois : vos workflows l’utilisent ensuite en votre nom, et chaque utilisation figure dans votre historique d’accès.',
    'services.filter': 'Filtrer les services',
    'services.none': 'Aucun service ne correspond.',
    'services.oauth': 'Connexion chez le fournisseur (OAuth)',
    'services.apiKey': 'Clé d’API',
    'services.connect': 'Connecter {service}',
    'services.connectShort': 'Connecter',
    'services.connecting': 'Ouverture de {service}…',
    'services.connected': '{count} connecté(s)',
    'services.notConfigured': 'Un administrateur doit configurer ces services avant qu’on puisse les connecter.',
    'services.unavailable': 'Indisponibles sur ce serveur ({count})',
    'services.useKey': 'Utiliser une clé d’API',
    'services.useKeyLabel': 'Utiliser une clé d’API pour {service}',
    'services.keyLabel': 'Clé d’API {service}',
    'services.keyHint': 'Stockée chiffrée ; personne ne pourra l’afficher de nouveau.',
    'services.labelLabel': 'Libellé (facultatif)',
    'services.labelHint': 'Pour distinguer plusieurs comptes d’un même service, par ex. « travail ».',
    'services.saveKey': 'Enregistrer la clé',
    'services.keySaved': '{service} : clé d’API enregistrée.',
    'services.keyRequired': 'Saisissez la clé d’API.',

    'connections.title': 'Mes connexions',
    'connections.intro': 'Les comptes que vos workflows peuvent utiliser. Déconnecter un compte révoque l’accès chez le fournisseur quand il le permet.',
    'connections.empty': 'Vous n’avez encore aucune connexion.',
    'connections.goServices': 'Connecter un service',
    'connections.service': 'Service',
    'connections.account': 'Compte',
    'connections.label': 'Libellé',
    'connections.status': 'État',
    'connections.expiry': 'Expiration du jeton',
    'connections.actions': 'Actions',
    'connections.reconnect': 'Reconnecter',
    'connections.reconnectLabel': 'Reconnecter {service}',
    'connections.disconnect': 'Déconnecter',
    'connections.disconnectLabel': 'Déconnecter {service}',
    'connections.confirmTitle': 'Déconnecter {service} ?',
    'connections.confirmBody': 'Les workflows ne pourront plus utiliser ce compte. Vous pourrez le reconnecter plus tard.',
    'connections.cancel': 'Annuler',
    'connections.disconnected': '{service} déconnecté.',
    'connections.revoked': 'L’accès a été révoqué chez le fournisseur.',
    'connections.notRevoked': 'L’accès n’a pas pu être révoqué chez le fournisseur ({reason}) ; révoquez-le aussi de votre côté si possible.',
    'connections.oauthSuccess': '{service} est connecté.',
    'connections.oauthError': 'La connexion a échoué : {reason}.',
    'connections.never': 'Sans expiration',
    'connections.expired': 'Expiré',
    'connections.expires': '{when}',
    'status.active': 'Actif',
    'status.expired': 'Expiré : à reconnecter',
    'status.revoked': 'Révoqué',

    'oauthError.invalid_state': 'le lien a déjà servi ou est inconnu',
    'oauthError.state_expired': 'le délai est dépassé, recommencez',
    'oauthError.provider_error': 'le fournisseur a refusé ({reason})',
    'oauthError.token_exchange_failed': 'le fournisseur n’a pas délivré de jeton',
    'oauthError.missing_code': 'le fournisseur n’a pas envoyé de code',
    'oauthError.provider_not_configured': 'ce service n’est pas configuré',
    'oauthError.store_failed': 'le compte n’a pas pu être enregistré',
    'oauthError.server_error': 'une erreur serveur est survenue',

    'history.title': 'Historique d’accès',
    'history.intro': 'Chaque fois qu’un workflow, un service ou un administrateur a lu l’un de vos secrets, ou a essayé. Personne d’autre ne voit votre historique ici.',
    'history.show': 'Afficher',
    'history.reads': 'Lectures de mes secrets',
    'history.all': 'Tout',
    'history.empty': 'Rien pour l’instant.',
    'history.when': 'Quand',
    'history.what': 'Quoi',
    'history.service': 'Service',
    'history.caller': 'Appelant',
    'history.workflow': 'Workflow',
    'history.grant': 'Autorisation',
    'history.request': 'Identifiant de requête',
    'history.more': 'Afficher les entrées plus anciennes',
    'history.loadedMore': '{count} entrées plus anciennes affichées.',
    'history.none': '—',
    'history.trusted': 'aucune (appelant de confiance)',
    'history.forRevocation': 'pour la révocation chez le fournisseur',

    'action.credential_read': 'Secret lu',
    'action.credential_refused': 'Refusé : pas d’autorisation valide',
    'action.grant_created': 'Autorisation donnée',
    'action.grant_revoked': 'Autorisation révoquée',
    'action.grant_shortened': 'Autorisation raccourcie',
    'action.credential_revealed': 'Révélé par un administrateur de la base',
    'action.credential_expired': 'Refusé : la connexion a expiré',
    'action.credential_not_found': 'Tentative : connexion inexistante',
    'action.decrypt_failed': 'Lecture échouée : le secret n’a pas pu être déchiffré',
    'action.connection_created': 'Connecté',
    'action.connection_deactivated': 'Déconnecté',
    'action.connection_updated': 'Connexion modifiée',
    'action.tokens_updated': 'Jetons remplacés',
    'action.tokens_refreshed': 'Jeton renouvelé',
    'action.status_changed': 'État modifié',
    'action.oauth_started': 'Connexion commencée',
    'action.refresh_failed': 'Renouvellement échoué',
    'action.login_succeeded': 'Connexion au portail',
    'action.user_created': 'Compte créé',
    'action.user_deactivated': 'Compte désactivé',

    'source.n8n': 'n8n (workflows)',
    'source.tooljet': 'ToolJet',
    'source.portal': 'Ce portail',
    'source.oauth': 'Connexion OAuth',
    'source.refresher': 'Renouvellement des jetons',
    'source.cli': 'Ligne de commande',
    'source.sql': 'Base de données',
    'source.otobot': 'Otobot lui-même',

    'grants.title': 'Autorisations',
    'grants.intro': 'Une autorisation permanente permet à un workflow planifié de lire les secrets des services choisis, jusqu’à son expiration ou sa révocation. Les workflows que vous lancez vous-même reçoivent automatiquement une autorisation de courte durée.',
    'grants.unavailable': 'Ce serveur ne gère pas encore les autorisations.',
    'grants.empty': 'Vous n’avez aucune autorisation permanente.',
    'grants.create': 'Nouvelle autorisation permanente',
    'grants.workflow': 'Workflow',
    'grants.workflowHint': 'Le nom du workflow planifié, tel que dans n8n.',
    'grants.services': 'Services qu’il peut lire',
    'grants.expires': 'Expire le',
    'grants.submit': 'Créer l’autorisation',
    'grants.created': 'Autorisation créée. Copiez-la maintenant : elle ne s’affiche qu’une fois.',
    'grants.token': 'Jeton d’autorisation',
    'grants.copy': 'Copier',
    'grants.copied': 'Copié.',
    'grants.status': 'État',
    'grants.createdAt': 'Créée le',
    'grants.revoke': 'Révoquer',
    'grants.revokeLabel': 'Révoquer l’autorisation de {workflow}',
    'grants.confirmTitle': 'Révoquer l’autorisation de {workflow} ?',
    'grants.confirmBody': 'Le workflow ne pourra plus lire vos secrets.',
    'grants.revoked': 'Autorisation révoquée.',
    'grants.active': 'Active',
    'grants.revokedStatus': 'Révoquée',
    'grants.expiredStatus': 'Expirée',
    'grants.needService': 'Choisissez au moins un service.',

    'users.title': 'Utilisateurs de {company}',
    'users.intro': 'Les personnes de votre entreprise qui peuvent connecter leurs comptes. Désactiver un utilisateur déconnecte aussitôt tous ses comptes.',
    'users.email': 'Adresse e-mail',
    'users.role': 'Rôle',
    'users.status': 'État',
    'users.createdAt': 'Créé le',
    'users.actions': 'Actions',
    'users.you': 'vous',
    'users.active': 'Actif',
    'users.inactive': 'Désactivé',
    'users.deactivate': 'Désactiver',
    'users.deactivateLabel': 'Désactiver {email}',
    'users.confirmTitle': 'Désactiver {email} ?',
    'users.confirmBody': 'Cette personne ne pourra plus se connecter, et tous les comptes qu’elle a reliés sont déconnectés.',
    'users.deactivated': '{email} désactivé.',
    'users.create': 'Ajouter un utilisateur',
    'users.password': 'Mot de passe initial',
    'users.passwordHint': 'Au moins 12 caractères. Transmettez-le par un canal sûr.',
    'users.roleUser': 'Utilisateur',
    'users.roleAdmin': 'Administrateur',
    'users.submit': 'Ajouter l’utilisateur',
    'users.created': '{email} ajouté.',
    'users.exists': 'Cette adresse e-mail est déjà utilisée.',
    'users.weak': 'Le mot de passe doit faire au moins 12 caractères.',
    'users.invalidEmail': 'Cette adresse e-mail n’est pas valide.',
  },
};

export const LANGUAGES = [
  { code: 'en', name: 'English' },
  { code: 'fr', name: 'Français' },
];
const STORAGE_KEY = 'otobot.lang';

function initial() {
  try {
    const saved = localStorage.getItem(STORAGE_KEY);
    if (saved && STRINGS[saved]) return saved;
  } catch {
    // Storage may be disabled: the browser's preference then.
  }
  for (const tag of navigator.languages || [navigator.language || 'en']) {
    const base = String(tag).toLowerCase().split('-')[0];
    if (STRINGS[base]) return base;
  }
  return 'en';
}

let current = initial();
const listeners = [];

export function lang() {
  return current;
}

export function setLang(code) {
  if (!STRINGS[code] || code === current) return;
  current = code;
  try {
    localStorage.setItem(STORAGE_KEY, code);
  } catch {
    // Not kept across visits then.
  }
  for (const listener of listeners) listener(code);
}

export function onLangChange(listener) {
  listeners.push(listener);
}

/** The string `key` in the current language, with `{name}` replaced from `params`. */
export function t(key, params = {}) {
  const text = STRINGS[current][key] ?? STRINGS.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (m, name) => (name in params ? String(params[name]) : m));
}

/** `t(key)` if the key exists, else `fallback`. */
export function tOr(key, fallback, params) {
  return key in STRINGS[current] || key in STRINGS.en ? t(key, params) : fallback;
}

export function formatDate(value) {
  if (!value) return '';
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) return String(value);
  return new Intl.DateTimeFormat(current, { dateStyle: 'medium', timeStyle: 'medium' }).format(date);
}

/** "in 3 hours", "2 minutes ago". */
export function formatRelative(value) {
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) return '';
  const seconds = Math.round((date.getTime() - Date.now()) / 1000);
  const units = [['day', 86400], ['hour', 3600], ['minute', 60], ['second', 1]];
  const rtf = new Intl.RelativeTimeFormat(current, { numeric: 'auto' });
  for (const [unit, size] of units) {
    if (Math.abs(seconds) >= size || unit === 'second') return rtf.format(Math.round(seconds / size), unit);
  }
  return '';
}

/** Every key of every language, for the consistency test. */
export function keys() {
  return Object.fromEntries(Object.entries(STRINGS).map(([code, s]) => [code, Object.keys(s)]));
}
