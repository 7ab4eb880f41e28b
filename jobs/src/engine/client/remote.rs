//! A client of a running tauc scheduler: the reachability check made before
//! any work, the job views of [`super::job_view`], and cancellation.

use std::sync::Arc;
use std::time::Duration;

use ballista_core::serde::protobuf::CancelJobParams;
use ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient;
use tonic::transport::{Channel, Endpoint};

use crate::engine::client::job_view::{JOBS_PATH, JobView};
use crate::engine::runtime::tls::ClusterTls;
use crate::error::{Error, Result};

/// How long the reachability check and each request wait.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A scheduler at `df://host:port`.
#[derive(Debug, Clone)]
pub struct SchedulerClient {
    url: String,
    base: String,
    http: reqwest::Client,
    grpc: SchedulerGrpcClient<Channel>,
}

/// `host:port` of a `df://host:port` URL.
pub fn host_port(url: &str) -> Result<&str> {
    let rest = url.trim().strip_prefix("df://").unwrap_or_default();
    let ok = rest
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
    if ok {
        Ok(rest)
    } else {
        Err(Error::config(format!(
            "invalid --scheduler '{url}' (expected df://host:port, e.g. df://10.0.0.5:50050)"
        )))
    }
}

/// An error's message with its causes (tonic's and hyper's top-level
/// messages alone say only "transport error").
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        source = s.source();
    }
    out
}

impl SchedulerClient {
    /// Checks that a scheduler answers at `url` (its `/healthz`), so that
    /// a wrong address fails before any work with exit 2.
    pub async fn connect(url: &str, tls: Option<&Arc<ClusterTls>>) -> Result<SchedulerClient> {
        let hp = host_port(url)?;
        let base = format!("{}://{hp}", if tls.is_some() { "https" } else { "http" });
        let hint = if tls.is_some() {
            "and that it was started with TLS (--cluster-ca …) and a certificate of the same CA"
        } else {
            "(a scheduler started with TLS needs --cluster-ca, --cluster-cert and --cluster-key)"
        };
        let unreachable = |why: String| {
            Error::config(format!(
                "cannot reach the scheduler at {url}: {why}; check --scheduler (or TAUC_SCHEDULER, \
                 `scheduler` in tauc.toml), that tauc-scheduler runs there {hint}"
            ))
        };
        let mut http = reqwest::Client::builder()
            .connect_timeout(TIMEOUT)
            .timeout(TIMEOUT);
        if let Some(tls) = tls {
            http = tls.http_client(http)?;
        }
        let http = http.build().map_err(|e| unreachable(chain(&e)))?;
        let answer = http
            .get(format!("{base}/healthz"))
            .send()
            .await
            .map_err(|e| unreachable(chain(&e)))?;
        if !answer.status().is_success() {
            return Err(unreachable(format!(
                "/healthz answered {}",
                answer.status()
            )));
        }
        let mut endpoint = Endpoint::from_shared(base.clone())
            .map_err(|e| unreachable(chain(&e)))?
            .connect_timeout(TIMEOUT);
        if let Some(tls) = tls {
            endpoint = endpoint
                .tls_config(tls.client())
                .map_err(|e| unreachable(chain(&e)))?;
        }
        let channel = endpoint.connect_lazy();
        Ok(SchedulerClient {
            url: url.trim().to_string(),
            base,
            http,
            grpc: SchedulerGrpcClient::new(channel),
        })
    }

    /// Does the scheduler answer its `/healthz` now?
    pub async fn healthy(&self) -> bool {
        let answer = self.http.get(format!("{}/healthz", self.base)).send().await;
        answer.is_ok_and(|a| a.status().is_success())
    }

    /// The scheduler's URL, `df://host:port`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Every job the scheduler knows, newest first.
    pub async fn jobs(&self) -> Result<Vec<JobView>> {
        let body = self.get(JOBS_PATH).await?;
        serde_json::from_slice(&body.ok_or_else(|| self.failed("the job list", "404".into()))?)
            .map_err(|e| self.failed("the job list", e.to_string()))
    }

    /// One job, `None` when the scheduler does not know it.
    pub async fn job(&self, job_id: &str) -> Result<Option<JobView>> {
        let path = format!("{JOBS_PATH}/{job_id}");
        match self.get(&path).await? {
            None => Ok(None),
            Some(body) => serde_json::from_slice(&body)
                .map(Some)
                .map_err(|e| self.failed("the job", e.to_string())),
        }
    }

    /// The body at `path`, `None` on 404.
    async fn get(&self, path: &str) -> Result<Option<bytes::Bytes>> {
        let answer = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .map_err(|e| self.failed(path, chain(&e)))?;
        match answer.status() {
            reqwest::StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => Ok(Some(
                answer
                    .bytes()
                    .await
                    .map_err(|e| self.failed(path, chain(&e)))?,
            )),
            s => Err(self.failed(path, format!("HTTP {s}"))),
        }
    }

    fn failed(&self, what: &str, why: String) -> Error {
        Error::Server(format!(
            "the scheduler at {} did not give {what}: {why}",
            self.url
        ))
    }

    /// Asks the scheduler to cancel `job_id`: its running tasks are
    /// stopped and the job ends as failed ("cancelled").
    pub async fn cancel(&self, job_id: &str) -> Result<()> {
        let mut grpc = self.grpc.clone();
        let request = CancelJobParams {
            job_id: job_id.to_string(),
        };
        tokio::time::timeout(TIMEOUT, grpc.cancel_job(request))
            .await
            .map_err(|_| self.failed("a cancellation", "no answer in 10 s".into()))?
            .map_err(|e| self.failed("a cancellation", e.message().to_string()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduler_urls() {
        assert_eq!(host_port("df://10.0.0.5:50050").unwrap(), "10.0.0.5:50050");
        assert_eq!(host_port(" df://h:1 ").unwrap(), "h:1");
        for bad in [
            "http://h:50050",
            "df://h",
            "df://:50050",
            "df://h:0",
            "df://h:x",
        ] {
            let e = host_port(bad).unwrap_err().to_string();
            assert!(e.contains("expected df://host:port"), "{bad}: {e}");
        }
    }
}
