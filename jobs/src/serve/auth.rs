//! Authentication of Flight SQL clients.
//!
//! A client logs in with the Flight SQL handshake, sending `authorization:
//! Basic base64(user:password)`; it gets back a random bearer token (in the
//! `authorization` response header, where ADBC and pyarrow look, and in the
//! handshake payload) that expires after the configured TTL. Every other
//! call must carry `authorization: Bearer <token>`: a session token or a
//! static service token of the users file. Refusals are `Unauthenticated`
//! and are logged with the user name and the reason, never the secret.
//!
//! Password guessing is held back: failed logins back off by user name and
//! by client address ([`crate::serve::backoff`]), answered
//! `ResourceExhausted` without a password check, and a wrong password
//! costs the same time and gets the same words whether or not the user
//! exists ([`Users::verify`]). Session tokens are kept and looked up by
//! their SHA-256, static tokens compared in constant time, so the time of
//! a token check tells nothing about a valid token.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tonic::Status;
use tonic::metadata::MetadataMap;

use crate::serve::backoff::{Backoff, LoginLimits};
use crate::serve::users::{Users, token_digest};

/// Who made a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The user or static token name.
    pub name: String,
}

struct Session {
    user: String,
    expires: Instant,
}

/// The users file and the sessions handed out.
pub struct Auth {
    users: Arc<Users>,
    ttl: Duration,
    /// By SHA-256 of the token, so a heap dump holds no live token.
    sessions: Mutex<HashMap<String, Session>>,
    backoff: Backoff,
}

impl Auth {
    /// Checks against `users`; session tokens live `ttl`; failed logins
    /// back off after `limits`. Slow (makes the hash unknown names are
    /// checked against).
    pub fn new(users: Users, ttl: Duration, limits: LoginLimits) -> Auth {
        users.dummy_hash();
        Auth {
            users: Arc::new(users),
            ttl,
            sessions: Mutex::new(HashMap::new()),
            backoff: Backoff::new(limits),
        }
    }

    /// Checks a handshake's basic credentials from client `peer`; returns
    /// the new bearer token.
    pub async fn login(
        &self,
        metadata: &MetadataMap,
        peer: Option<IpAddr>,
    ) -> Result<(String, Caller), Status> {
        let header = header(metadata).ok_or_else(|| {
            refuse(
                "-",
                "no credentials",
                "log in with a user name and password",
            )
        })?;
        let Some(basic) = header.strip_prefix("Basic ") else {
            // a bearer token at handshake: accept it if valid
            let caller = self.check(metadata)?;
            let token = header.trim_start_matches("Bearer ").to_string();
            return Ok((token, caller));
        };
        let decoded = base64_decode(basic.trim())
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| {
                refuse(
                    "-",
                    "malformed basic credentials",
                    "send base64(user:password)",
                )
            })?;
        let (user, password) = decoded.split_once(':').ok_or_else(|| {
            refuse(
                "-",
                "malformed basic credentials",
                "send base64(user:password)",
            )
        })?;
        let attempt = self
            .backoff
            .begin(user, peer, Instant::now())
            .map_err(|wait| too_many(user, peer, wait))?;
        let (users, u, p) = (self.users.clone(), user.to_string(), password.to_string());
        let ok = tokio::task::spawn_blocking(move || users.verify(&u, &p))
            .await
            .unwrap_or(false);
        if !ok {
            attempt.failed(Instant::now());
            return Err(refuse(user, "wrong user name or password", "check them"));
        }
        attempt.succeeded(Instant::now());
        let token = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        sessions.retain(|_, s| s.expires > now);
        sessions.insert(
            token_digest(&token),
            Session {
                user: user.to_string(),
                expires: now + self.ttl,
            },
        );
        tracing::info!(user, "logged in");
        Ok((
            token,
            Caller {
                name: user.to_string(),
            },
        ))
    }

    /// Checks a call's bearer token.
    pub fn check(&self, metadata: &MetadataMap) -> Result<Caller, Status> {
        let header = header(metadata)
            .ok_or_else(|| refuse("-", "no token", "log in first (Flight SQL handshake)"))?;
        let token = header
            .strip_prefix("Bearer ")
            .ok_or_else(|| {
                refuse(
                    "-",
                    "not a bearer token",
                    "log in first (Flight SQL handshake)",
                )
            })?
            .trim();
        if let Some(name) = self.users.token_name(token) {
            return Ok(Caller {
                name: name.to_string(),
            });
        }
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        match sessions.get(&token_digest(token)) {
            Some(s) if s.expires > Instant::now() => Ok(Caller {
                name: s.user.clone(),
            }),
            Some(s) => Err(refuse(&s.user, "session expired", "log in again")),
            None => Err(refuse("-", "unknown or revoked token", "log in again")),
        }
    }
}

fn header(metadata: &MetadataMap) -> Option<&str> {
    metadata.get("authorization").and_then(|v| v.to_str().ok())
}

/// The refusal of a login in a back-off window: the same for every name,
/// existing or not.
fn too_many(user: &str, peer: Option<IpAddr>, wait: Duration) -> Status {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    tracing::warn!(
        user,
        peer = %peer.map_or("-".to_string(), |p| p.to_string()),
        wait_secs = secs,
        "login refused: backing off after failed logins"
    );
    Status::resource_exhausted(format!("too many failed logins; try again in {secs} s"))
}

fn refuse(user: &str, why: &str, what_to_do: &str) -> Status {
    tracing::warn!(user, reason = why, "authentication refused");
    Status::unauthenticated(format!("{why}: {what_to_do}"))
}

/// Standard base64, padded or not; `None` when malformed.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(s.trim_end_matches('='))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes_basic_credentials() {
        assert_eq!(base64_decode("YWxpY2U6cHc=").unwrap(), b"alice:pw");
        assert_eq!(base64_decode("YWxpY2U6cHc").unwrap(), b"alice:pw");
        assert_eq!(base64_decode("YQ==").unwrap(), b"a");
        assert!(base64_decode("Y").is_none());
        assert!(base64_decode("!!!!").is_none());
    }

    fn md(value: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert("authorization", value.parse().unwrap());
        m
    }

    #[tokio::test]
    async fn sessions_expire_and_static_tokens_pass() {
        let mut users = Users::default();
        users.set_password("alice", "correct horse").unwrap();
        let svc = users.new_token("superset").unwrap();
        let auth = Auth::new(users, Duration::from_millis(300), LoginLimits::default());
        // alice:correct horse
        let (token, caller) = auth
            .login(&md("Basic YWxpY2U6Y29ycmVjdCBob3JzZQ=="), None)
            .await
            .unwrap();
        assert_eq!(caller.name, "alice");
        assert_eq!(
            auth.check(&md(&format!("Bearer {token}"))).unwrap().name,
            "alice"
        );
        assert_eq!(
            auth.check(&md(&format!("Bearer {svc}"))).unwrap().name,
            "superset"
        );
        // alice:wrong
        let e = auth
            .login(&md("Basic YWxpY2U6d3Jvbmc="), None)
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        assert!(auth.check(&MetadataMap::new()).is_err());
        assert!(auth.check(&md("Bearer nope")).is_err());
        std::thread::sleep(Duration::from_millis(400));
        let e = auth.check(&md(&format!("Bearer {token}"))).unwrap_err();
        assert!(e.message().contains("expired"), "{}", e.message());
    }
}
