//! Authentication (argon2-hashed passwords) and per-user topic ACLs.

use std::collections::HashMap;
use std::sync::Arc;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use thiserror::Error;

use crate::config::{Acl, AuthConfig};
use crate::topic;

/// Why a password could not be hashed.
#[derive(Debug, Error)]
#[error("cannot hash password: {0}")]
pub struct HashError(String);

/// Hashes `password` with argon2id and a random salt, giving the PHC string to put in
/// `ringway.toml` as `password_hash`.
pub fn hash_password(password: &str) -> Result<String, HashError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| HashError(e.to_string()))
}

/// Like [`hash_password`] with explicit argon2id cost parameters (memory in KiB, iterations,
/// parallelism). Verification cost follows the parameters stored in the hash.
pub fn hash_password_with(
    password: &str,
    memory_kib: u32,
    iterations: u32,
    parallelism: u32,
) -> Result<String, HashError> {
    let params = argon2::Params::new(memory_kib, iterations, parallelism, None)
        .map_err(|e| HashError(e.to_string()))?;
    let salt = SaltString::generate(&mut OsRng);
    Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| HashError(e.to_string()))
}

/// Outcome of checking CONNECT credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    /// Accepted; the client acts with this identity (shared by every client of the same user
    /// when its ACL does not name the client id).
    Accepted(Arc<Identity>),
    /// Unknown user or wrong password.
    BadCredentials,
    /// No username given and anonymous access is off.
    NotAuthorized,
}

/// Who a connection is, with its ACL resolved (`%u`/`%c` substituted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Username, `None` for anonymous clients.
    pub username: Option<String>,
    publish: Vec<String>,
    subscribe: Vec<String>,
}

impl Identity {
    /// An identity allowed everything (used by bridges, whose traffic is configured by the
    /// operator rather than authenticated).
    pub fn unrestricted() -> Self {
        Identity {
            username: None,
            publish: vec!["#".into()],
            subscribe: vec!["#".into()],
        }
    }

    /// May this client publish to topic name `topic`?
    pub fn may_publish(&self, topic_name: &str) -> bool {
        self.publish.iter().any(|f| topic::matches(topic_name, f))
    }

    /// May this client subscribe to `filter`? Allowed when one ACL filter covers it entirely.
    pub fn may_subscribe(&self, filter: &str) -> bool {
        self.subscribe
            .iter()
            .any(|f| topic::filter_covers(f, filter))
    }
}

/// Checks credentials against the configured users.
#[derive(Debug, Clone)]
pub struct Authenticator {
    allow_anonymous: bool,
    anonymous: Acl,
    /// The anonymous identity, when its ACL does not depend on the client id.
    anonymous_shared: Option<Arc<Identity>>,
    /// Username → (password hash, ACL, identity when the ACL does not depend on the client id).
    users: HashMap<String, (String, Acl, Option<Arc<Identity>>)>,
}

/// The identity of `user` under `acl`, resolved once, unless the ACL names the client id (`%c`):
/// connections of the same user then share it instead of each holding a copy of the ACL.
fn shared_identity(user: Option<&str>, acl: &Acl) -> Option<Arc<Identity>> {
    let per_client = acl
        .publish
        .iter()
        .chain(&acl.subscribe)
        .any(|f| f.contains("%c"));
    (!per_client).then(|| Arc::new(resolve(user, "", acl)))
}

impl Authenticator {
    /// Builds from config (hashes were validated by [`crate::Config::validate`]).
    pub fn new(config: &AuthConfig) -> Self {
        Authenticator {
            allow_anonymous: config.allow_anonymous,
            anonymous: config.anonymous.clone(),
            anonymous_shared: shared_identity(None, &config.anonymous),
            users: config
                .users
                .iter()
                .map(|u| {
                    let shared = shared_identity(Some(&u.username), &u.acl);
                    (
                        u.username.clone(),
                        (u.password_hash.clone(), u.acl.clone(), shared),
                    )
                })
                .collect(),
        }
    }

    /// True when checking a login costs an argon2 verification (run it off the reactor).
    pub fn needs_hashing(&self, username: Option<&str>) -> bool {
        username.is_some_and(|u| self.users.contains_key(u))
    }

    /// Checks a CONNECT's username/password. The password is compared with argon2, so this takes
    /// milliseconds for known users: call it from a blocking context.
    pub fn check(&self, client_id: &str, username: Option<&str>, password: &[u8]) -> AuthOutcome {
        match username {
            None => {
                if self.allow_anonymous {
                    AuthOutcome::Accepted(match &self.anonymous_shared {
                        Some(id) => id.clone(),
                        None => Arc::new(resolve(None, client_id, &self.anonymous)),
                    })
                } else {
                    AuthOutcome::NotAuthorized
                }
            }
            Some(user) => {
                let Some((hash, acl, shared)) = self.users.get(user) else {
                    return AuthOutcome::BadCredentials;
                };
                let Ok(parsed) = PasswordHash::new(hash) else {
                    return AuthOutcome::BadCredentials;
                };
                if Argon2::default().verify_password(password, &parsed).is_ok() {
                    AuthOutcome::Accepted(match shared {
                        Some(id) => id.clone(),
                        None => Arc::new(resolve(Some(user), client_id, acl)),
                    })
                } else {
                    AuthOutcome::BadCredentials
                }
            }
        }
    }
}

fn resolve(user: Option<&str>, client_id: &str, acl: &Acl) -> Identity {
    let subst = |f: &String| -> Option<String> {
        if f.contains("%u") && user.is_none() {
            return None; // a per-user pattern grants nothing to anonymous clients
        }
        let s = f.replace("%u", user.unwrap_or("")).replace("%c", client_id);
        // A substituted value containing wildcards would widen the ACL: drop the entry.
        let widened = (f.contains("%u") && user.is_some_and(|u| u.contains(['+', '#', '/'])))
            || (f.contains("%c") && client_id.contains(['+', '#', '/']));
        (!widened && topic::valid_filter(&s)).then_some(s)
    };
    Identity {
        username: user.map(str::to_owned),
        publish: acl.publish.iter().filter_map(subst).collect(),
        subscribe: acl.subscribe.iter().filter_map(subst).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UserConfig;

    fn config() -> AuthConfig {
        AuthConfig {
            allow_anonymous: false,
            anonymous: Acl::default(),
            users: vec![UserConfig {
                username: "alice".into(),
                password_hash: hash_password_with("s3cret", 8, 1, 1).unwrap(),
                acl: Acl {
                    publish: vec!["sensors/%u/#".into()],
                    subscribe: vec!["devices/%c/+".into(), "public/#".into()],
                },
            }],
        }
    }

    #[test]
    fn passwords_and_acls() {
        let a = Authenticator::new(&config());
        assert_eq!(a.check("c1", None, b""), AuthOutcome::NotAuthorized);
        assert_eq!(
            a.check("c1", Some("bob"), b"x"),
            AuthOutcome::BadCredentials
        );
        assert_eq!(
            a.check("c1", Some("alice"), b"wrong"),
            AuthOutcome::BadCredentials
        );
        let AuthOutcome::Accepted(id) = a.check("c1", Some("alice"), b"s3cret") else {
            panic!("alice rejected");
        };
        assert!(id.may_publish("sensors/alice/t"));
        assert!(!id.may_publish("sensors/bob/t"));
        assert!(id.may_subscribe("devices/c1/cmd"));
        assert!(id.may_subscribe("devices/c1/+"));
        assert!(!id.may_subscribe("devices/c1/#"));
        assert!(!id.may_subscribe("devices/c2/cmd"));
        assert!(id.may_subscribe("public/a/#"));
    }

    #[test]
    fn default_hash_is_argon2id_and_verifies() {
        let h = hash_password("pw").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(hash_password_with("pw", 1, 0, 0).is_err());
    }

    #[test]
    fn wildcard_identities_do_not_widen_acls() {
        let a = Authenticator::new(&config());
        let AuthOutcome::Accepted(id) = a.check("#", Some("alice"), b"s3cret") else {
            panic!("alice rejected");
        };
        assert!(!id.may_subscribe("devices/x/cmd"));
        assert!(id.may_subscribe("public/x"));
    }

    #[test]
    fn anonymous_gets_configured_acl() {
        let mut c = config();
        c.allow_anonymous = true;
        c.anonymous = Acl {
            publish: vec!["in/%c".into(), "u/%u".into()],
            subscribe: vec![],
        };
        let a = Authenticator::new(&c);
        let AuthOutcome::Accepted(id) = a.check("dev1", None, b"") else {
            panic!("anonymous rejected");
        };
        assert!(id.may_publish("in/dev1"));
        assert!(!id.may_publish("in/dev2"));
        assert!(!id.may_publish("u/"));
        assert!(!id.may_subscribe("#"));
    }
}
