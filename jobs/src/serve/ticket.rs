//! Statement tickets, signed by the server that issued them.
//!
//! A statement ticket carries its SQL from `GetFlightInfo` to `DoGet`
//! (the server keeps no result between the two), so a client could write
//! a ticket of its own. Each ticket therefore carries an HMAC-SHA256 over
//! its query id, SQL, the user it was issued to and its expiry, under a
//! key drawn at random when the process starts: `DoGet` runs a ticket only
//! if this process signed it, for the caller, and it has not expired. A
//! restart invalidates the tickets handed out, which clients meet as "run
//! the query again".

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::hmac;
use serde::{Deserialize, Serialize};
use tonic::Status;

use crate::error::{Error, Result};

/// The refusal of every ticket that does not pass, whatever the reason
/// (which is logged).
pub const REFUSAL: &str = "ticket not issued by this server or expired; run the query again";

/// What a statement ticket carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handle {
    /// The query's id (for cancellation).
    pub id: String,
    /// The statement.
    pub sql: String,
    /// The user or token name it was issued to.
    pub user: String,
    /// Seconds since the Unix epoch after which it is refused.
    pub expires: u64,
    /// Hex HMAC-SHA256 of the fields above.
    sig: String,
}

/// Signs and checks tickets with this process's key.
pub struct Signer {
    key: hmac::Key,
    ttl: Duration,
}

impl Signer {
    /// A signer with a fresh random key; its tickets live `ttl`.
    pub fn new(ttl: Duration) -> Result<Signer> {
        let rng = ring::rand::SystemRandom::new();
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng)
            .map_err(|_| Error::Server("cannot draw a random ticket key".into()))?;
        Ok(Signer { key, ttl })
    }

    /// The ticket bytes of statement `sql`, query `id`, for `user`.
    pub fn issue(&self, id: &str, sql: &str, user: &str) -> Result<Vec<u8>, Status> {
        self.issue_at(id, sql, user, SystemTime::now())
    }

    fn issue_at(
        &self,
        id: &str,
        sql: &str,
        user: &str,
        now: SystemTime,
    ) -> Result<Vec<u8>, Status> {
        let expires = unix(now) + self.ttl.as_secs().max(1);
        let tag = hmac::sign(&self.key, &signed_bytes(id, sql, user, expires));
        let handle = Handle {
            id: id.into(),
            sql: sql.into(),
            user: user.into(),
            expires,
            sig: hex(tag.as_ref()),
        };
        serde_json::to_vec(&handle).map_err(|e| Status::internal(e.to_string()))
    }

    /// The handle of `ticket` if this process issued it to `caller` and
    /// it has not expired.
    pub fn open(&self, ticket: &[u8], caller: &str) -> Result<Handle, Status> {
        self.open_at(ticket, caller, SystemTime::now())
    }

    fn open_at(&self, ticket: &[u8], caller: &str, now: SystemTime) -> Result<Handle, Status> {
        let refuse = |why: &str| {
            tracing::warn!(user = caller, reason = why, "ticket refused");
            Status::permission_denied(REFUSAL)
        };
        let h: Handle = serde_json::from_slice(ticket).map_err(|_| refuse("not a ticket"))?;
        let tag = unhex(&h.sig).ok_or_else(|| refuse("no signature"))?;
        hmac::verify(
            &self.key,
            &signed_bytes(&h.id, &h.sql, &h.user, h.expires),
            &tag,
        )
        .map_err(|_| refuse("bad signature"))?;
        if h.user != caller {
            return Err(refuse("issued to another user"));
        }
        if unix(now) > h.expires {
            return Err(refuse("expired"));
        }
        Ok(h)
    }
}

/// The fields, each length-prefixed, so no two tickets sign alike.
fn signed_bytes(id: &str, sql: &str, user: &str, expires: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(id.len() + sql.len() + user.len() + 40);
    for field in [id, sql, user] {
        out.extend_from_slice(&(field.len() as u64).to_be_bytes());
        out.extend_from_slice(field.as_bytes());
    }
    out.extend_from_slice(&expires.to_be_bytes());
    out
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_signers_tickets_for_the_caller_before_expiry_open() {
        let s = Signer::new(Duration::from_secs(60)).unwrap();
        let t0 = SystemTime::now();
        let ticket = s.issue_at("q1", "SELECT 1", "alice", t0).unwrap();
        let h = s.open_at(&ticket, "alice", t0).unwrap();
        assert_eq!((h.id.as_str(), h.sql.as_str()), ("q1", "SELECT 1"));

        let refused = |r: Result<Handle, Status>| {
            let e = r.expect_err("opened");
            assert_eq!(e.code(), tonic::Code::PermissionDenied);
            assert_eq!(e.message(), REFUSAL);
        };
        // another user, after expiry, another process's key
        refused(s.open_at(&ticket, "bob", t0));
        refused(s.open_at(&ticket, "alice", t0 + Duration::from_secs(61)));
        let other = Signer::new(Duration::from_secs(60)).unwrap();
        refused(other.open_at(&ticket, "alice", t0));
        // any field changed
        let mut v: serde_json::Value = serde_json::from_slice(&ticket).unwrap();
        for (field, value) in [
            ("sql", serde_json::json!("SELECT 2")),
            ("user", serde_json::json!("bob")),
            ("id", serde_json::json!("q2")),
            ("expires", serde_json::json!(u64::MAX)),
            ("sig", serde_json::json!("00")),
            ("sig", serde_json::json!("zz")),
        ] {
            let old = v[field].clone();
            v[field] = value;
            refused(s.open_at(&serde_json::to_vec(&v).unwrap(), "alice", t0));
            refused(s.open_at(&serde_json::to_vec(&v).unwrap(), "bob", t0));
            v[field] = old;
        }
        // the old unsigned format, and garbage
        refused(s.open_at(br#"{"id":"q1","sql":"SELECT 1"}"#, "alice", t0));
        refused(s.open_at(b"\xff\x00", "alice", t0));
        // length prefixes: moving bytes between fields breaks the tag
        assert_ne!(
            signed_bytes("ab", "c", "u", 1),
            signed_bytes("a", "bc", "u", 1)
        );
    }
}
