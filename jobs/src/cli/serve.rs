//! `tauc-job serve` and `tauc-job users`: the Flight SQL server's flags
//! and the users file's editor.

use std::io::BufRead as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::cli::flags::EngineArgs;
use crate::config::{FileConfig, parse_duration};
use crate::engine::runtime::scratch::parse_size;
use crate::error::{Error, Result};
use crate::serve::backoff::LoginLimits;
use crate::serve::users::Users;
use crate::serve::{ServeSettings, flight::Limits};

/// Default listen address: loopback, so nothing is exposed until an
/// operator says where.
pub const DEFAULT_BIND: &str = "127.0.0.1:50060";

/// `serve` flags.
#[derive(Debug, Clone, Args)]
pub struct ServeCmd {
    /// Listen address [default: 127.0.0.1:50060; use the master's private
    /// address to let the Superset host in].
    #[arg(long, env = "TAUC_SERVE_BIND")]
    pub bind: Option<String>,
    /// The users file (`tauc-job users add NAME --users FILE` makes it).
    #[arg(long, env = "TAUC_USERS_FILE")]
    pub users: Option<PathBuf>,
    /// TLS certificate chain (PEM); with --tls-key.
    #[arg(long, env = "TAUC_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM); with --tls-cert.
    #[arg(long, env = "TAUC_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// How long a login lasts, e.g. 8h [default: 8h].
    #[arg(long, env = "TAUC_TOKEN_TTL", value_parser = parse_duration)]
    pub token_ttl: Option<Duration>,
    /// Failed logins in a row, per user name and per client address,
    /// before logins back off [default: 5].
    #[arg(long, env = "TAUC_LOGIN_ATTEMPTS")]
    pub login_attempts: Option<u32>,
    /// The first back-off window after --login-attempts failures, e.g. 1s;
    /// each further failure doubles it, up to 5 minutes [default: 1s].
    #[arg(long, env = "TAUC_LOGIN_BACKOFF", value_parser = parse_duration)]
    pub login_backoff: Option<Duration>,
    /// Longest a query may run, e.g. 300s [default: 300s].
    #[arg(long, env = "TAUC_QUERY_TIMEOUT", value_parser = parse_duration)]
    pub query_timeout: Option<Duration>,
    /// Most rows one result may have [default: 1000000].
    #[arg(long, env = "TAUC_MAX_ROWS")]
    pub max_rows: Option<u64>,
    /// Most queries running at once; more wait for a slot until their
    /// deadline. Each in-process query gets this share of --memory-limit
    /// [default: 4].
    #[arg(long, env = "TAUC_MAX_QUERIES")]
    pub max_queries: Option<usize>,
    /// Most queries of one user (or token) running at once [default: 2].
    #[arg(long, env = "TAUC_MAX_QUERIES_PER_USER")]
    pub max_queries_per_user: Option<usize>,
    /// Spill files one in-process query may write (2GiB, 512MiB) [default: 2GiB].
    #[arg(long, env = "TAUC_QUERY_SCRATCH", value_parser = parse_size)]
    pub query_scratch: Option<usize>,
    /// Scheduler, parallelism, memory, scratch space, stores.
    #[command(flatten)]
    pub engine: EngineArgs,
}

impl ServeCmd {
    /// Flags > environment (clap) > the `[serve]` section > defaults.
    pub fn settings(&self, file: &FileConfig) -> Result<ServeSettings> {
        let f = &file.serve;
        let bind_text = self
            .bind
            .clone()
            .or(f.bind.clone())
            .unwrap_or_else(|| DEFAULT_BIND.into());
        let bind: SocketAddr = bind_text.parse().map_err(|_| {
            Error::config(format!(
                "invalid --bind '{bind_text}' (expected host:port, e.g. 127.0.0.1:50060)"
            ))
        })?;
        let users = self.users.clone().or(f.users.clone()).ok_or_else(|| {
            Error::config(
                "--users FILE is required: who may log in (create it with `tauc-job users add NAME --users FILE`)",
            )
        })?;
        let cert = self.tls_cert.clone().or(f.tls_cert.clone());
        let key = self.tls_key.clone().or(f.tls_key.clone());
        let tls = match (cert, key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => {
                return Err(Error::config(
                    "--tls-cert and --tls-key go together: give both, or neither",
                ));
            }
        };
        let duration = |flag: &str, v: Option<Duration>, file: &Option<String>, default: u64| match (
            v, file,
        ) {
            (Some(d), _) => Ok(d),
            (None, Some(t)) => {
                parse_duration(t).map_err(|e| Error::config(format!("[serve] {flag}: {e}")))
            }
            (None, None) => Ok(Duration::from_secs(default)),
        };
        let token_ttl = duration("token-ttl", self.token_ttl, &f.token_ttl, 8 * 3600)?;
        let query_timeout = duration("query-timeout", self.query_timeout, &f.query_timeout, 300)?;
        let defaults = LoginLimits::default();
        let login_attempts = self
            .login_attempts
            .or(f.login_attempts)
            .unwrap_or(defaults.attempts);
        let login_backoff = duration(
            "login-backoff",
            self.login_backoff,
            &f.login_backoff,
            defaults.backoff.as_secs(),
        )?;
        let max_rows = self.max_rows.or(f.max_rows).unwrap_or(1_000_000);
        let max_queries = self.max_queries.or(f.max_queries).unwrap_or(4);
        let max_queries_per_user = self
            .max_queries_per_user
            .or(f.max_queries_per_user)
            .unwrap_or(2);
        let query_scratch = match (self.query_scratch, &f.query_scratch) {
            (Some(n), _) => n,
            (None, Some(t)) => {
                parse_size(t).map_err(|e| Error::config(format!("[serve] query-scratch: {e}")))?
            }
            (None, None) => 2 << 30,
        };
        if max_rows == 0
            || query_timeout.is_zero()
            || token_ttl.is_zero()
            || max_queries == 0
            || max_queries_per_user == 0
            || query_scratch == 0
            || login_attempts == 0
            || login_backoff.is_zero()
        {
            return Err(Error::config(
                "--max-rows, --query-timeout, --token-ttl, --max-queries, --max-queries-per-user, --query-scratch, --login-attempts and --login-backoff must be above zero",
            ));
        }
        Ok(ServeSettings {
            bind,
            users,
            tls,
            token_ttl,
            logins: LoginLimits {
                attempts: login_attempts,
                backoff: login_backoff,
            },
            limits: Limits {
                query_timeout,
                max_rows,
                max_queries,
                max_queries_per_user,
                query_scratch: query_scratch as u64,
            },
        })
    }
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
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeCmd,
    }

    fn settings(args: &[&str], file: &str) -> Result<ServeSettings> {
        let cli = Cli::try_parse_from(["serve", "--users", "u.toml"].iter().chain(args))
            .map_err(|e| Error::config(e.to_string()))?;
        cli.serve.settings(&toml::from_str(file).unwrap())
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
