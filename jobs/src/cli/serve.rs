//! `tauc-job serve` and `tauc-job users`: the Flight SQL server's flags
//! and the users file's editor.

use std::io::BufRead as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};

use crate::cli::flags::EngineArgs;
use crate::config::{Layers, human, parse_duration};
use crate::engine::runtime::scratch::parse_size;
use crate::error::{Error, Result};
use crate::serve::backoff::LoginLimits;
use crate::serve::users::Users;
use crate::serve::{ServeSettings, flight::Limits};

/// Default listen address: loopback, so nothing is exposed until an
/// operator says where.
pub const DEFAULT_BIND: &str = "127.0.0.1:50060";

/// `serve` flags. Serialized (unset ones left out), the flag layer of
/// [`ServeConfig`] and of the engine's settings; `--bind` and `--users`
/// go by their variables' keys (`serve-bind`, `users-file`), as the
/// `[serve]` section's `bind` and `users` do.
#[derive(Debug, Clone, Args, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ServeCmd {
    /// Listen address [default: 127.0.0.1:50060; use the master's private
    /// address to let the Superset host in].
    #[arg(long, env = "TAUC_SERVE_BIND")]
    #[serde(rename = "serve-bind", skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    /// The users file (`tauc-job users add NAME --users FILE` makes it).
    #[arg(long, env = "TAUC_USERS_FILE")]
    #[serde(rename = "users-file", skip_serializing_if = "Option::is_none")]
    pub users: Option<PathBuf>,
    /// TLS certificate chain (PEM); with --tls-key.
    #[arg(long, env = "TAUC_TLS_CERT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM); with --tls-cert.
    #[arg(long, env = "TAUC_TLS_KEY")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// How long a login lasts, e.g. 8h [default: 8h].
    #[arg(long, env = "TAUC_TOKEN_TTL", value_parser = parse_duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "human::duration::serialize_some"
    )]
    pub token_ttl: Option<Duration>,
    /// Failed logins in a row, per user name and per client address,
    /// before logins back off [default: 5].
    #[arg(long, env = "TAUC_LOGIN_ATTEMPTS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub login_attempts: Option<u32>,
    /// The first back-off window after --login-attempts failures, e.g. 1s;
    /// each further failure doubles it, up to 5 minutes [default: 1s].
    #[arg(long, env = "TAUC_LOGIN_BACKOFF", value_parser = parse_duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "human::duration::serialize_some"
    )]
    pub login_backoff: Option<Duration>,
    /// Longest a query may run, e.g. 300s [default: 300s].
    #[arg(long, env = "TAUC_QUERY_TIMEOUT", value_parser = parse_duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "human::duration::serialize_some"
    )]
    pub query_timeout: Option<Duration>,
    /// Most rows one result may have [default: 1000000].
    #[arg(long, env = "TAUC_MAX_ROWS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_rows: Option<u64>,
    /// Most queries running at once; more wait for a slot until their
    /// deadline. Each in-process query gets this share of --memory-limit
    /// [default: 4].
    #[arg(long, env = "TAUC_MAX_QUERIES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_queries: Option<usize>,
    /// Most queries of one user (or token) running at once [default: 2].
    #[arg(long, env = "TAUC_MAX_QUERIES_PER_USER")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_queries_per_user: Option<usize>,
    /// Spill files one in-process query may write (2GiB, 512MiB) [default: 2GiB].
    #[arg(long, env = "TAUC_QUERY_SCRATCH", value_parser = parse_size)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query_scratch: Option<usize>,
    /// Memory for the byte ranges of data files that in-process queries
    /// read, kept for the next query that reads them (512MiB, 0 = none)
    /// [default: 512MiB].
    #[arg(long, env = "TAUC_READ_CACHE", value_parser = parse_size)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_cache: Option<usize>,
    /// Scheduler, parallelism, memory, scratch space, stores.
    #[command(flatten)]
    #[serde(flatten)]
    pub engine: EngineArgs,
}

/// `serve`'s own settings (`[serve]`), as [`Layers::extract`] layers them;
/// checked and shaped into [`ServeSettings`] by [`ServeCmd::settings`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct ServeConfig {
    /// Listen address, as given.
    pub serve_bind: String,
    /// The users file.
    pub users_file: Option<PathBuf>,
    /// TLS certificate chain.
    pub tls_cert: Option<PathBuf>,
    /// TLS private key.
    pub tls_key: Option<PathBuf>,
    /// How long a login lasts.
    #[serde(with = "human::duration")]
    pub token_ttl: Duration,
    /// Failed logins before logins back off.
    pub login_attempts: u32,
    /// The first back-off window.
    #[serde(with = "human::duration")]
    pub login_backoff: Duration,
    /// Longest a query may run.
    #[serde(with = "human::duration")]
    pub query_timeout: Duration,
    /// Most rows of one result.
    pub max_rows: u64,
    /// Most queries at once.
    pub max_queries: usize,
    /// Most queries of one user at once.
    pub max_queries_per_user: usize,
    /// Spill bytes of one in-process query.
    #[serde(with = "human::size")]
    pub query_scratch: usize,
    /// Bytes of data files' ranges kept in memory.
    #[serde(with = "human::size")]
    pub read_cache: usize,
}

impl Default for ServeConfig {
    fn default() -> ServeConfig {
        let logins = LoginLimits::default();
        ServeConfig {
            serve_bind: DEFAULT_BIND.into(),
            users_file: None,
            tls_cert: None,
            tls_key: None,
            token_ttl: Duration::from_secs(8 * 3600),
            login_attempts: logins.attempts,
            login_backoff: logins.backoff,
            query_timeout: Duration::from_secs(300),
            max_rows: 1_000_000,
            max_queries: 4,
            max_queries_per_user: 2,
            query_scratch: 2 << 30,
            read_cache: 512 << 20,
        }
    }
}

impl ServeCmd {
    /// Flags > environment > the `[serve]` section > defaults, checked.
    pub fn settings(&self, layers: &Layers) -> Result<ServeSettings> {
        let c: ServeConfig = layers.extract(self)?;
        let bind: SocketAddr = c.serve_bind.parse().map_err(|_| {
            Error::config(format!(
                "invalid --bind '{}' (expected host:port, e.g. 127.0.0.1:50060)",
                c.serve_bind
            ))
        })?;
        let users = c.users_file.clone().ok_or_else(|| {
            Error::config(
                "--users FILE is required: who may log in (create it with `tauc-job users add NAME --users FILE`)",
            )
        })?;
        let tls = match (c.tls_cert.clone(), c.tls_key.clone()) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => {
                return Err(Error::config(
                    "--tls-cert and --tls-key go together: give both, or neither",
                ));
            }
        };
        check_above_zero(&c)?;
        Ok(ServeSettings {
            bind,
            users,
            tls,
            token_ttl: c.token_ttl,
            logins: LoginLimits {
                attempts: c.login_attempts,
                backoff: c.login_backoff,
            },
            limits: Limits {
                query_timeout: c.query_timeout,
                max_rows: c.max_rows,
                max_queries: c.max_queries,
                max_queries_per_user: c.max_queries_per_user,
                query_scratch: c.query_scratch as u64,
            },
            read_cache: c.read_cache,
        })
    }
}

/// A zero limit would refuse every query or login; none may be zero.
fn check_above_zero(c: &ServeConfig) -> Result<()> {
    if c.max_rows == 0
        || c.query_timeout.is_zero()
        || c.token_ttl.is_zero()
        || c.max_queries == 0
        || c.max_queries_per_user == 0
        || c.query_scratch == 0
        || c.login_attempts == 0
        || c.login_backoff.is_zero()
    {
        return Err(Error::config(
            "--max-rows, --query-timeout, --token-ttl, --max-queries, --max-queries-per-user, --query-scratch, --login-attempts and --login-backoff must be above zero",
        ));
    }
    Ok(())
}

/// `users` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum UsersCmd {
    /// Add a user or set their password, read from standard input (a
    /// prompt without echo on a terminal). Creates the file if missing.
    Add(UserArgs),
    /// Make a static token for a service (printed once; the file keeps
    /// only its SHA-256).
    Token(UserArgs),
    /// Remove a user or token.
    Remove(UserArgs),
    /// List users and tokens (names only).
    List {
        /// The users file.
        #[arg(long, env = "TAUC_USERS_FILE")]
        users: PathBuf,
    },
}

/// A name and the users file.
#[derive(Debug, Clone, Args)]
pub struct UserArgs {
    /// User or token name.
    pub name: String,
    /// The users file.
    #[arg(long, env = "TAUC_USERS_FILE")]
    pub users: PathBuf,
}

/// Runs a `users` subcommand.
pub fn users(cmd: &UsersCmd) -> Result<String> {
    match cmd {
        UsersCmd::Add(a) => {
            let mut u = Users::load_or_new(&a.users)?;
            let password = read_password(&a.name)?;
            u.set_password(&a.name, &password)?;
            u.save(&a.users)?;
            Ok(format!(
                "set the password of '{}' in {}\n",
                a.name,
                a.users.display()
            ))
        }
        UsersCmd::Token(a) => {
            let mut u = Users::load_or_new(&a.users)?;
            let token = u.new_token(&a.name)?;
            u.save(&a.users)?;
            eprintln!(
                "token '{}' stored as its SHA-256 in {}; this is the only time it is shown:",
                a.name,
                a.users.display()
            );
            Ok(format!("{token}\n"))
        }
        UsersCmd::Remove(a) => {
            let mut u = Users::load(&a.users)?;
            if !u.remove(&a.name) {
                return Err(Error::config(format!(
                    "no user or token '{}' in {}",
                    a.name,
                    a.users.display()
                )));
            }
            u.save(&a.users)?;
            Ok(format!("removed '{}'\n", a.name))
        }
        UsersCmd::List { users } => {
            let u = Users::load(users)?;
            let mut out = String::new();
            for n in u.users.keys() {
                out.push_str(&format!("user  {n}\n"));
            }
            for n in u.tokens.keys() {
                out.push_str(&format!("token {n}\n"));
            }
            Ok(out)
        }
    }
}

/// The password: prompted without echo on a terminal, else the first
/// line of standard input.
fn read_password(name: &str) -> Result<String> {
    use std::io::IsTerminal as _;
    let line = if std::io::stdin().is_terminal() {
        rpassword::prompt_password(format!("password for {name}: "))
            .map_err(|e| Error::config(format!("cannot read the password: {e}")))?
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| Error::config(format!("cannot read the password from stdin: {e}")))?;
        line
    };
    let password = line.trim_end_matches(['\r', '\n']).to_string();
    if password.is_empty() {
        return Err(Error::config(
            "no password given (type it at the prompt, or pipe it: `printf '%s\\n' \"$PW\" | tauc-job users add NAME --users FILE`)",
        ));
    }
    Ok(password)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Section;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeCmd,
    }

    fn settings(args: &[&str], file: &str) -> Result<ServeSettings> {
        let cli = Cli::try_parse_from(["serve", "--users", "u.toml"].iter().chain(args))
            .map_err(|e| Error::config(e.to_string()))?;
        let file = toml::from_str(file).unwrap();
        let no_env: [(String, String); 0] = [];
        let layers = Layers::new(&file, "t.toml", Section::Serve, no_env)?;
        cli.serve.settings(&layers)
    }

    #[test]
    fn login_limits_come_from_flags_over_the_file_over_defaults() {
        let s = settings(&[], "").unwrap();
        assert_eq!(s.logins, LoginLimits::default());
        let file = "[serve]\nlogin-attempts = 3\nlogin-backoff = \"2s\"\n";
        let s = settings(&[], file).unwrap();
        assert_eq!((s.logins.attempts, s.logins.backoff.as_secs()), (3, 2));
        let s = settings(&["--login-attempts", "9", "--login-backoff", "500ms"], file).unwrap();
        assert_eq!(s.logins.attempts, 9);
        assert_eq!(s.logins.backoff, Duration::from_millis(500));
        for bad in [
            &["--login-attempts", "0"][..],
            &["--login-backoff", "0s"][..],
        ] {
            let e = settings(bad, "").unwrap_err().to_string();
            assert!(e.contains("must be above zero"), "{e}");
        }
        let e = settings(&[], "[serve]\nlogin-backoff = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("login-backoff") && e.contains("'soon'"), "{e}");
    }
}
