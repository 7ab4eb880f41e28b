//! Who may connect: the users file of `tauc-job serve`.
//!
//! A TOML file that holds no secret, only what checks one:
//!
//! ```toml
//! [users.alice]
//! argon2 = "$argon2id$v=19$m=19456,t=2,p=1$…"   # `tauc-job users add alice`
//!
//! [tokens.superset]
//! sha256 = "9f86d0…"                            # `tauc-job users token superset`
//! ```
//!
//! Users log in with a password (Argon2id hashes, PHC strings); services
//! may instead present a long random static token, stored as its SHA-256
//! (a token is random, so a fast hash is as good as a slow one). The file
//! is written with mode 0600.
//!
//! Checking a password costs one Argon2 verification whether or not the
//! name exists: an unknown name is checked against a hash of a random
//! password made with the parameters of the file's users, so the time of
//! a refusal does not tell which names exist.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The users file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Users {
    /// Password users by name.
    #[serde(default)]
    pub users: BTreeMap<String, User>,
    /// Static service tokens by name.
    #[serde(default)]
    pub tokens: BTreeMap<String, StaticToken>,
    /// What unknown names are checked against ([`Users::dummy_hash`]).
    #[serde(skip)]
    dummy: OnceLock<String>,
}

/// One password user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// The password's Argon2id hash (PHC string).
    pub argon2: String,
}

/// One service token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticToken {
    /// Hex SHA-256 of the token.
    pub sha256: String,
}

/// Hex SHA-256 of a token.
pub fn token_digest(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Users {
    /// Reads `path`; a missing file is an error naming the command that
    /// creates it.
    pub fn load(path: &Path) -> Result<Users> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::config(format!(
                "cannot read the users file {}: {e} (create it with `tauc-job users add NAME --users {}`)",
                path.display(),
                path.display()
            ))
        })?;
        let users: Users = toml::from_str(&text)
            .map_err(|e| Error::config(format!("invalid users file {}: {e}", path.display())))?;
        for (name, u) in &users.users {
            PasswordHash::new(&u.argon2).map_err(|e| {
                Error::config(format!(
                    "invalid users file {}: user '{name}' has no valid argon2 hash ({e}); set it again with `tauc-job users add {name}`",
                    path.display()
                ))
            })?;
        }
        for (name, t) in &users.tokens {
            if t.sha256.len() != 64 || !t.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Error::config(format!(
                    "invalid users file {}: token '{name}' needs a 64-digit hex sha256",
                    path.display()
                )));
            }
        }
        Ok(users)
    }

    /// Reads `path`, or an empty file when it does not exist yet.
    pub fn load_or_new(path: &Path) -> Result<Users> {
        if path.exists() {
            Users::load(path)
        } else {
            Ok(Users::default())
        }
    }

    /// Writes the file (mode 0600) through a temporary file and a rename,
    /// so a crash never leaves half a file.
    pub fn save(&self, path: &Path) -> Result<()> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let text = format!(
            "# tauc-job serve users: password hashes and token digests, no secrets.\n# Edit with `tauc-job users add|token|remove`.\n{}",
            toml::to_string(self).map_err(|e| Error::config(format!("users file: {e}")))?
        );
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| Error::config(format!("cannot write {}: {e}", tmp.display())))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }

    /// Sets `name`'s password.
    pub fn set_password(&mut self, name: &str, password: &str) -> Result<()> {
        check_name(name)?;
        if password.chars().count() < 8 {
            return Err(Error::config(
                "password too short: use at least 8 characters",
            ));
        }
        let salt = SaltString::encode_b64(uuid::Uuid::new_v4().as_bytes())
            .map_err(|e| Error::config(format!("salt: {e}")))?;
        let hash = argon2::Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map_err(|e| Error::config(format!("cannot hash the password: {e}")))?;
        self.users.insert(
            name.to_string(),
            User {
                argon2: hash.to_string(),
            },
        );
        Ok(())
    }

    /// Makes a new static token for `name`, stores its digest and returns
    /// it (shown once).
    pub fn new_token(&mut self, name: &str) -> Result<String> {
        check_name(name)?;
        let token = format!(
            "tauc_{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        self.tokens.insert(
            name.to_string(),
            StaticToken {
                sha256: token_digest(&token),
            },
        );
        Ok(token)
    }

    /// Removes a user or token; false when neither exists.
    pub fn remove(&mut self, name: &str) -> bool {
        let a = self.users.remove(name).is_some();
        let b = self.tokens.remove(name).is_some();
        a || b
    }

    /// Whether `password` is `name`'s. Slow on purpose (Argon2), and as
    /// slow for a name that does not exist: call it off the async threads.
    pub fn verify(&self, name: &str, password: &str) -> bool {
        let (phc, known) = self.hash_to_check(name);
        let ok = PasswordHash::new(phc).is_ok_and(|hash| {
            argon2::Argon2::default()
                .verify_password(password.as_bytes(), &hash)
                .is_ok()
        });
        ok && known
    }

    /// The hash a password for `name` is checked against, and whether it
    /// is `name`'s own: for an unknown name, [`Users::dummy_hash`].
    fn hash_to_check(&self, name: &str) -> (&str, bool) {
        match self.users.get(name) {
            Some(u) => (u.argon2.as_str(), true),
            None => (self.dummy_hash(), false),
        }
    }

    /// A hash of a random password, made with the algorithm, version and
    /// parameters of the file's first user (Argon2id defaults when there
    /// is none), so that checking it costs what checking theirs does.
    /// Made once (slow): call it at start-up.
    pub fn dummy_hash(&self) -> &str {
        self.dummy.get_or_init(|| {
            let like = self
                .users
                .values()
                .find_map(|u| hasher_like(&u.argon2))
                .unwrap_or_default();
            let secret = uuid::Uuid::new_v4().simple().to_string();
            SaltString::encode_b64(uuid::Uuid::new_v4().as_bytes())
                .ok()
                .and_then(|salt| {
                    like.hash_password(secret.as_bytes(), &salt)
                        .ok()
                        .map(|h| h.to_string())
                })
                // not with parameters that made a valid hash; should it
                // happen, a user's own hash costs the same to check
                .or_else(|| self.users.values().next().map(|u| u.argon2.clone()))
                .unwrap_or_default()
        })
    }

    /// The name of the static token `token`, if it is one. Every stored
    /// digest is compared, each in constant time.
    pub fn token_name(&self, token: &str) -> Option<&str> {
        use subtle::ConstantTimeEq as _;
        let digest = token_digest(token);
        let mut found = None;
        for (name, t) in &self.tokens {
            let stored = t.sha256.to_ascii_lowercase();
            if bool::from(stored.as_bytes().ct_eq(digest.as_bytes())) && found.is_none() {
                found = Some(name.as_str());
            }
        }
        found
    }
}

/// An Argon2 hasher with the algorithm, version and parameters of `phc`.
fn hasher_like(phc: &str) -> Option<argon2::Argon2<'static>> {
    let hash = PasswordHash::new(phc).ok()?;
    let algorithm = argon2::Algorithm::try_from(hash.algorithm).ok()?;
    let version = argon2::Version::try_from(hash.version.unwrap_or(0x13)).ok()?;
    let params = argon2::Params::try_from(&hash).ok()?;
    Some(argon2::Argon2::new(algorithm, version, params))
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '@'))
    {
        return Err(Error::config(format!(
            "invalid name '{name}': use letters, digits and _ - . @"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_and_tokens_round_trip_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        let mut u = Users::load_or_new(&path).unwrap();
        u.set_password("alice", "correct horse").unwrap();
        let token = u.new_token("superset").unwrap();
        u.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("correct horse") && !text.contains(&token));
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        let u = Users::load(&path).unwrap();
        assert!(u.verify("alice", "correct horse"));
        assert!(!u.verify("alice", "correct horsE"));
        assert!(!u.verify("bob", "correct horse"));
        assert_eq!(u.token_name(&token), Some("superset"));
        assert_eq!(u.token_name("tauc_guess"), None);
        assert!(Users::default().set_password("a b", "long enough").is_err());
        assert!(Users::default().set_password("bob", "short").is_err());
    }

    /// The algorithm, version, parameters and lengths of a PHC string.
    fn shape(phc: &str) -> String {
        let h = PasswordHash::new(phc).unwrap();
        format!(
            "{} {:?} {} salt={} out={}",
            h.algorithm,
            h.version,
            h.params,
            h.salt.unwrap().len(),
            h.hash.unwrap().len()
        )
    }

    #[test]
    fn an_unknown_name_costs_the_same_verification_as_a_known_one() {
        let mut u = Users::default();
        u.set_password("alice", "correct horse").unwrap();
        let (own, known) = u.hash_to_check("alice");
        assert!(known);
        assert_eq!(own, u.users["alice"].argon2);
        // an unknown name is checked against a hash of the same shape
        let (dummy, known) = u.hash_to_check("nobody");
        assert!(!known);
        assert_eq!(shape(dummy), shape(own));
        assert_ne!(dummy, own);
        assert!(!u.verify("nobody", "correct horse"));
        // made once
        assert!(std::ptr::eq(u.dummy_hash(), u.hash_to_check("carol").0));

        // a file whose hashes have other parameters: the dummy follows them
        let custom = argon2::Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            argon2::Params::new(8192, 3, 1, Some(32)).unwrap(),
        );
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let phc = custom.hash_password(b"pw", &salt).unwrap().to_string();
        let mut u = Users::default();
        u.users.insert(
            "old".into(),
            User {
                argon2: phc.clone(),
            },
        );
        assert_eq!(shape(u.dummy_hash()), shape(&phc));
        assert!(shape(&phc).contains("m=8192,t=3,p=1"), "{}", shape(&phc));
        assert!(u.verify("old", "pw") && !u.verify("nobody", "pw"));

        // no users (tokens only): Argon2id defaults
        let mut defaults = Users::default();
        defaults.set_password("x", "long enough").unwrap();
        assert_eq!(
            shape(Users::default().dummy_hash()),
            shape(&defaults.users["x"].argon2)
        );
    }

    #[test]
    fn a_bad_file_names_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        std::fs::write(&path, "[users.alice]\nargon2 = \"plain-text\"\n").unwrap();
        let e = Users::load(&path).unwrap_err().to_string();
        assert!(e.contains("user 'alice'") && e.contains("argon2"), "{e}");
        let e = Users::load(&dir.path().join("none.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("tauc-job users add"), "{e}");
    }
}
