//! The Flight SQL service over the committed warehouse.
//!
//! Statements and prepared statements are planned by
//! [`crate::warehouse::query::plan`], so the same read-only rule holds as
//! for `tauc-job sql`. A ticket carries the statement (not a result held
//! on the server), signed for the user it was issued to
//! ([`crate::serve::ticket`]): `DoGet` checks the signature, plans the
//! statement again and streams the batches as they come, with string and binary view columns cast to plain `Utf8` /
//! `Binary`, which every client reads. Each query has a deadline and a row
//! limit, and can be cancelled with `CancelQuery`. Prepared statements
//! are kept on the server and answer only the user who prepared them.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionCancelQueryRequest, ActionCancelQueryResult, ActionClosePreparedStatementRequest,
    ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult, Any,
    CommandGetCatalogs, CommandGetDbSchemas, CommandGetSqlInfo, CommandGetTableTypes,
    CommandGetTables, CommandPreparedStatementQuery, CommandStatementQuery,
    DoPutPreparedStatementResult, ProstMessageExt, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{
    FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, IpcMessage,
    SchemaAsIpc, Ticket,
};
use datafusion::arrow::array::{ArrayRef, AsArray, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::ipc::writer::IpcWriteOptions;
use datafusion::common::ScalarValue;
use datafusion::dataframe::DataFrame;
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream, execute_stream};
use datafusion::prelude::SessionContext;
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};

use crate::error::Error;
use crate::serve::auth::{Auth, Caller};
use crate::serve::placeholders;
use crate::serve::quota::{self, QueryRuntime, Slot, Slots};
use crate::serve::ticket::Signer;
use crate::store::Location;
use crate::warehouse::redact;

/// The catalog and schema every table is in (DataFusion's defaults).
const CATALOG: &str = "datafusion";
const SCHEMA: &str = "public";

/// `ActionCancelQueryResult.result` values (the enum is not re-exported).
const CANCEL_CANCELLED: i32 = 1;
const CANCEL_NOT_CANCELLABLE: i32 = 3;

/// Per-query limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest a query may run, planning included.
    pub query_timeout: Duration,
    /// Most rows one result may have.
    pub max_rows: u64,
    /// Most queries running at once.
    pub max_queries: usize,
    /// Most queries of one user running at once.
    pub max_queries_per_user: usize,
    /// Most bytes of spill files one query may write (in-process engine).
    pub query_scratch: u64,
}

/// A prepared statement: who prepared it, its SQL and the parameters
/// bound last.
struct Prepared {
    user: String,
    sql: String,
    params: Vec<ScalarValue>,
}

/// The refusal of a prepared statement that is not the caller's (closed,
/// never made, or another user's: the same words for all three).
fn no_such_prepared() -> Status {
    Status::not_found("no such prepared statement (closed?): prepare it again")
}

/// The service: one warehouse session shared by every client.
pub struct Service {
    ctx: SessionContext,
    auth: Arc<Auth>,
    limits: Limits,
    sql_info: SqlInfoData,
    /// The in-process engine's per-query resources; `None` on a cluster.
    local: Option<QueryRuntime>,
    slots: Slots,
    prepared: Mutex<HashMap<String, Prepared>>,
    /// Signs the statement tickets handed out.
    tickets: Signer,
    /// Cancellation switches of queries handed out and not yet finished.
    queries: Queries,
    /// The warehouse, whose paths clients see as tables and partitions.
    warehouse: Arc<Location>,
}

type DoGetStream = <Service as FlightService>::DoGetStream;

/// Cancellation switches by query id, with when each was handed out.
type Queries = Arc<Mutex<HashMap<String, (Instant, watch::Sender<bool>)>>>;

impl Service {
    /// A service over the tables registered on `ctx`.
    pub fn new(
        ctx: SessionContext,
        auth: Arc<Auth>,
        limits: Limits,
        local: Option<QueryRuntime>,
        warehouse: Location,
    ) -> Result<Service, Error> {
        let mut b = SqlInfoDataBuilder::new();
        b.append(SqlInfo::FlightSqlServerName, "tauc");
        b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
        b.append(SqlInfo::FlightSqlServerArrowVersion, "1.3");
        b.append(SqlInfo::FlightSqlServerReadOnly, true);
        b.append(SqlInfo::FlightSqlServerSql, true);
        b.append(SqlInfo::FlightSqlServerSubstrait, false);
        b.append(SqlInfo::FlightSqlServerCancel, true);
        b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
        b.append(SqlInfo::SqlDdlCatalog, false);
        b.append(SqlInfo::SqlDdlSchema, false);
        b.append(SqlInfo::SqlDdlTable, false);
        let info = b
            .build()
            .map_err(|e| Error::Server(format!("sql info: {e}")))?;
        Ok(Service {
            ctx,
            auth,
            limits,
            sql_info: info,
            local,
            slots: Slots::new(limits.max_queries, limits.max_queries_per_user),
            prepared: Mutex::new(HashMap::new()),
            // a ticket is fetched at once; a slow client still has twice
            // the query deadline, at least a minute
            tickets: Signer::new((2 * limits.query_timeout).max(Duration::from_secs(60)))?,
            queries: Arc::new(Mutex::new(HashMap::new())),
            warehouse: Arc::new(warehouse),
        })
    }

    fn check<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        self.auth.check(req.metadata())
    }

    /// Plans `sql` with `params` bound; errors say what is wrong.
    async fn plan(&self, sql: &str, params: &[ScalarValue]) -> Result<DataFrame, Status> {
        self.plan_in(&self.ctx, sql, params)
            .await
            .map_err(|s| redact_status(s, &self.warehouse))
    }

    /// Plans `sql` in `ctx` with `params` bound.
    async fn plan_in(
        &self,
        ctx: &SessionContext,
        sql: &str,
        params: &[ScalarValue],
    ) -> Result<DataFrame, Status> {
        let sql = placeholders::numbered(sql)?;
        let df = crate::warehouse::query::plan(ctx, &sql, false)
            .await
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let wanted = df
            .logical_plan()
            .get_parameter_types()
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if wanted.is_empty() && params.is_empty() {
            return Ok(df);
        }
        if wanted.len() != params.len() {
            return Err(Status::invalid_argument(format!(
                "the statement has {} parameter(s) but {} were bound",
                wanted.len(),
                params.len()
            )));
        }
        let mut values = Vec::with_capacity(params.len());
        for (i, v) in params.iter().enumerate() {
            let ty = wanted.get(&format!("${}", i + 1)).cloned().flatten();
            values.push(match ty {
                Some(t) if t != v.data_type() => v
                    .cast_to(&t)
                    .map_err(|e| Status::invalid_argument(format!("parameter ${}: {e}", i + 1)))?,
                _ => v.clone(),
            });
        }
        df.with_param_values(values)
            .map_err(|e| Status::invalid_argument(e.to_string()))
    }

    /// Registers a query that can be cancelled; forgets stale ones.
    fn register(&self, id: &str) {
        let mut q = self.queries.lock().unwrap_or_else(|e| e.into_inner());
        let horizon = 2 * self.limits.query_timeout;
        q.retain(|_, (t, _)| t.elapsed() < horizon);
        q.entry(id.to_string())
            .or_insert_with(|| (Instant::now(), watch::channel(false).0));
    }

    /// The context a query runs in: on the in-process engine a copy of the
    /// session with the query's own runtime (memory share, scratch limit);
    /// on a cluster the shared session (the executors hold the memory).
    fn query_ctx(&self) -> Result<SessionContext, Status> {
        let Some(local) = &self.local else {
            return Ok(self.ctx.clone());
        };
        let runtime = local
            .runtime()
            .map_err(|e| Status::internal(format!("cannot set up the query: {e}")))?;
        let state = SessionStateBuilder::new_from_existing(self.ctx.state())
            .with_runtime_env(runtime)
            .with_physical_optimizer_rule(Arc::new(quota::YieldEverywhere))
            .build();
        Ok(SessionContext::new_with_state(state))
    }

    /// Plans and runs `sql` for `caller` as a stream of Flight data; the
    /// query is logged when it ends, however it ends.
    async fn execute(
        &self,
        id: &str,
        caller: &Caller,
        sql: &str,
        params: &[ScalarValue],
        started: Instant,
    ) -> Result<DoGetStream, Status> {
        let mut log = QueryLog::new(&caller.name, sql, started);
        match self.start(id, caller, sql, params, started).await {
            Ok(run) => Ok(self.stream(run, log)),
            Err(status) => {
                log.outcome = Some(outcome_of(&status));
                Err(status)
            }
        }
    }

    /// Everything up to the first batch: a slot, the plan, the stream.
    async fn start(
        &self,
        id: &str,
        caller: &Caller,
        sql: &str,
        params: &[ScalarValue],
        started: Instant,
    ) -> Result<Run, Status> {
        self.register(id);
        let registration = Registration {
            queries: self.queries.clone(),
            id: id.to_string(),
        };
        let cancel = {
            let q = self.queries.lock().unwrap_or_else(|e| e.into_inner());
            q.get(id).map(|(_, tx)| tx.subscribe())
        }
        .ok_or_else(|| Status::not_found("query not found"))?;
        if *cancel.borrow() {
            return Err(Status::cancelled("the query was cancelled"));
        }
        let deadline = tokio::time::Instant::from_std(started + self.limits.query_timeout);
        let slot = self.slots.take(&caller.name, deadline).await?;
        let ctx = self.query_ctx()?;
        let redact = |s: Status| redact_status(s, &self.warehouse);
        let df = self.plan_in(&ctx, sql, params).await.map_err(redact)?;
        let schema = plain_schema(df.schema().as_arrow());
        let (state, logical) = df.into_parts();
        let explain = matches!(logical, LogicalPlan::Explain(_) | LogicalPlan::Analyze(_));
        let local = self.local.as_ref();
        let plan = tokio::time::timeout_at(deadline, state.create_physical_plan(&logical))
            .await
            .map_err(|_| self.timed_out())?
            .map_err(|e| redact(quota::explain(&e, local)))?;
        let inner = execute_stream(plan.clone(), state.task_ctx())
            .map_err(|e| redact(quota::explain(&e, local)))?;
        Ok(Run {
            inner,
            scheduler: crate::engine::client::submitted::scheduler_of(state.config()),
            plan,
            schema,
            rows: 0,
            limits: self.limits,
            local: self.local.clone(),
            deadline,
            cancel,
            done: false,
            log: None,
            explain,
            warehouse: self.warehouse.clone(),
            _slot: slot,
            _registration: registration,
        })
    }

    /// A started query's batches, encoded for Flight.
    fn stream(&self, mut run: Run, log: QueryLog) -> DoGetStream {
        let schema = run.schema.clone();
        run.log = Some(log);
        let batches = futures::stream::unfold(run, Run::step);
        let data = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(batches)
            .map_err(Status::from);
        Box::pin(data)
    }

    fn timed_out(&self) -> Status {
        Status::deadline_exceeded(format!(
            "the query ran longer than the server's limit of {} s (--query-timeout); narrow it with WHERE dt = … or aggregate",
            self.limits.query_timeout.as_secs()
        ))
    }

    /// A FlightInfo whose one endpoint is `ticket`.
    fn info(
        &self,
        schema: &Schema,
        ticket: Vec<u8>,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        let endpoint = FlightEndpoint::new().with_ticket(Ticket::new(ticket));
        let info = FlightInfo::new()
            .try_with_schema(schema)
            .map_err(|e| Status::internal(format!("cannot encode the schema: {e}")))?
            .with_endpoint(endpoint)
            .with_descriptor(descriptor);
        Ok(Response::new(info))
    }

    /// Every table: name and plain schema, in name order.
    async fn tables(&self) -> Result<Vec<(String, SchemaRef)>, Status> {
        let catalog = self
            .ctx
            .catalog(CATALOG)
            .ok_or_else(|| Status::internal("no catalog"))?;
        let schema = catalog
            .schema(SCHEMA)
            .ok_or_else(|| Status::internal("no schema"))?;
        let mut names = schema.table_names();
        names.sort();
        let mut out = Vec::with_capacity(names.len());
        for n in names {
            if let Ok(Some(t)) = schema.table(&n).await {
                out.push((n, plain_schema(&t.schema())));
            }
        }
        Ok(out)
    }

    /// A metadata answer: one batch, or the error that built none.
    fn reply<E: std::fmt::Display>(
        batch: Result<RecordBatch, E>,
    ) -> Result<Response<DoGetStream>, Status> {
        let batch = batch.map_err(|e| Status::internal(e.to_string()))?;
        let data = FlightDataEncoderBuilder::new()
            .with_schema(batch.schema())
            .build(futures::stream::once(async { Ok(batch) }))
            .map_err(Status::from);
        Ok(Response::new(Box::pin(data)))
    }
}

/// Removes a query's cancellation switch when its stream ends or is
/// dropped.
struct Registration {
    queries: Queries,
    id: String,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut q = self.queries.lock().unwrap_or_else(|e| e.into_inner());
        q.remove(&self.id);
    }
}

/// A running query: batches until the end, the deadline, the row limit or
/// a cancellation, whichever comes first. Dropping it (the end, an error,
/// or a client that went away) drops the engine's stream, which aborts
/// its in-process tasks, and cancels its Ballista job on a cluster.
struct Run {
    inner: SendableRecordBatchStream,
    /// The scheduler a cluster query runs on (none in-process).
    scheduler: Option<crate::engine::client::remote::SchedulerClient>,
    plan: Arc<dyn ExecutionPlan>,
    schema: SchemaRef,
    rows: u64,
    limits: Limits,
    local: Option<QueryRuntime>,
    deadline: tokio::time::Instant,
    cancel: watch::Receiver<bool>,
    done: bool,
    log: Option<QueryLog>,
    /// EXPLAIN's text names the files it reads: they are redacted too.
    explain: bool,
    warehouse: Arc<Location>,
    _slot: Slot,
    _registration: Registration,
}

impl Run {
    async fn step(mut self) -> Option<(Result<RecordBatch, FlightError>, Run)> {
        if self.done {
            return None;
        }
        let next = tokio::select! {
            biased;
            _ = self.cancel.wait_for(|c| *c) => Err(Status::cancelled("the query was cancelled")),
            _ = tokio::time::sleep_until(self.deadline) => Err(Status::deadline_exceeded(format!(
                "the query ran longer than the server's limit of {} s (--query-timeout); narrow it with WHERE dt = … or aggregate",
                self.limits.query_timeout.as_secs()
            ))),
            b = self.inner.next() => Ok(b),
        };
        let item = match next {
            Ok(None) => {
                self.outcome("ok".into());
                return None;
            }
            Ok(Some(Ok(b))) => self.batch(&b),
            Ok(Some(Err(e))) => Err(quota::explain(&e, self.local.as_ref())),
            Err(status) => Err(status),
        };
        if let Err(status) = &item {
            self.done = true;
            self.outcome(outcome_of(status));
        }
        let item = item.map_err(|s| redact_status(s, &self.warehouse));
        Some((item.map_err(|s| FlightError::Tonic(Box::new(s))), self))
    }

    /// Counts a batch against the row limit and makes its types plain.
    fn batch(&mut self, b: &RecordBatch) -> Result<RecordBatch, Status> {
        self.rows += b.num_rows() as u64;
        if self.rows > self.limits.max_rows {
            return Err(Status::resource_exhausted(format!(
                "the result has more than {} rows, the server's limit (--max-rows); add LIMIT, a WHERE clause or an aggregate",
                self.limits.max_rows
            )));
        }
        let mut plain =
            plain_batch(b, &self.schema).map_err(|e| Status::internal(e.to_string()))?;
        if self.explain {
            plain = redact_batch(&plain, &self.warehouse)?;
        }
        if let Some(log) = &mut self.log {
            log.rows = self.rows;
            log.bytes += plain.get_array_memory_size() as u64;
        }
        Ok(plain)
    }

    fn outcome(&mut self, outcome: String) {
        if let Some(log) = &mut self.log {
            log.outcome = Some(outcome);
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let finished = self
            .log
            .as_ref()
            .is_some_and(|l| l.outcome.as_deref() == Some("ok"));
        if finished {
            return;
        }
        // a cluster job does not stop with its client: ask the scheduler
        if let (Some(job), Ok(rt)) = (
            crate::engine::client::submitted::job_id(&self.plan),
            tokio::runtime::Handle::try_current(),
        ) {
            let scheduler = self.scheduler.take();
            rt.spawn(async move {
                crate::engine::client::submitted::cancel(scheduler.as_ref(), &job).await
            });
        }
    }
}

/// One query's log line, written when it ends: who, which statement (a
/// fingerprint: the text may hold literals that are secrets, and bound
/// parameter values are never logged), rows, bytes, time and outcome.
struct QueryLog {
    user: String,
    fingerprint: String,
    started: Instant,
    rows: u64,
    bytes: u64,
    outcome: Option<String>,
}

impl QueryLog {
    fn new(user: &str, sql: &str, started: Instant) -> QueryLog {
        QueryLog {
            user: user.to_string(),
            fingerprint: fingerprint(sql),
            started,
            rows: 0,
            bytes: 0,
            outcome: None,
        }
    }
}

impl Drop for QueryLog {
    fn drop(&mut self) {
        let outcome = self.outcome.as_deref().unwrap_or("client went away");
        tracing::info!(
            user = %self.user,
            sql = %self.fingerprint,
            rows = self.rows,
            bytes = self.bytes,
            ms = self.started.elapsed().as_millis() as u64,
            outcome = %outcome,
            "query"
        );
    }
}

/// The first 16 hex digits of the statement's SHA-256: the same statement
/// has the same fingerprint, and the text cannot be read back from it.
fn fingerprint(sql: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(sql.trim().as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A failed query's outcome for the log: the status code and the message.
fn outcome_of(status: &Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

/// The type a client gets for `t`: view types as their plain forms.
fn plain_type(t: &DataType) -> DataType {
    match t {
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView => DataType::Binary,
        DataType::List(f) => DataType::List(Arc::new(plain_field(f))),
        DataType::LargeList(f) => DataType::LargeList(Arc::new(plain_field(f))),
        DataType::Struct(fs) => DataType::Struct(fs.iter().map(|f| plain_field(f)).collect()),
        other => other.clone(),
    }
}

fn plain_field(f: &Field) -> Field {
    f.clone().with_data_type(plain_type(f.data_type()))
}

/// A schema with view types replaced by their plain forms.
pub fn plain_schema(s: &Schema) -> SchemaRef {
    Arc::new(Schema::new_with_metadata(
        s.fields()
            .iter()
            .map(|f| plain_field(f))
            .collect::<Vec<_>>(),
        s.metadata().clone(),
    ))
}

fn plain_batch(
    b: &RecordBatch,
    schema: &SchemaRef,
) -> Result<RecordBatch, datafusion::arrow::error::ArrowError> {
    let columns = b
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(c.clone())
            } else {
                datafusion::arrow::compute::cast(c, f.data_type())
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(schema.clone(), columns)
}

fn ipc_schema(schema: &Schema) -> Result<bytes::Bytes, Status> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e: datafusion::arrow::error::ArrowError| Status::internal(e.to_string()))?;
    Ok(bytes)
}

/// `s` with its message's warehouse paths named as tables and partitions.
fn redact_status(s: Status, warehouse: &Location) -> Status {
    Status::new(s.code(), redact::redact(s.message(), warehouse))
}

/// A batch of text (EXPLAIN's plan) with its warehouse paths redacted.
fn redact_batch(b: &RecordBatch, warehouse: &Location) -> Result<RecordBatch, Status> {
    let columns = b
        .columns()
        .iter()
        .map(|c| match c.as_string_opt::<i32>() {
            Some(text) => Arc::new(
                text.iter()
                    .map(|v| v.map(|v| redact::redact(v, warehouse)))
                    .collect::<StringArray>(),
            ) as ArrayRef,
            None => c.clone(),
        })
        .collect();
    RecordBatch::try_new(b.schema(), columns).map_err(|e| Status::internal(e.to_string()))
}

/// A parameter's value: flightsql-dbapi sends each one in a dense union
/// (so each may have its own type); the value is the union's member.
fn union_value(v: ScalarValue) -> ScalarValue {
    match v {
        ScalarValue::Union(Some((_, inner)), _, _) => *inner,
        other => other,
    }
}

fn prepared_id(handle: &[u8]) -> Result<String, Status> {
    String::from_utf8(handle.to_vec())
        .map_err(|_| Status::invalid_argument("not a prepared statement of this server"))
}

#[tonic::async_trait]
impl FlightSqlService for Service {
    type FlightService = Service;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        let peer = request.remote_addr().map(|a| a.ip());
        let (token, _) = self.auth.login(request.metadata(), peer).await?;
        let reply = HandshakeResponse {
            protocol_version: 0,
            payload: token.clone().into(),
        };
        let mut response: Response<
            Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>,
        > = Response::new(Box::pin(futures::stream::iter([Ok(reply)])));
        let header = format!("Bearer {token}")
            .parse()
            .map_err(|_| Status::internal("token header"))?;
        response.metadata_mut().insert("authorization", header);
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let caller = self.check(&request)?;
        let df = self.plan(&query.query, &[]).await?;
        let schema = plain_schema(df.schema().as_arrow());
        let id = uuid::Uuid::new_v4().to_string();
        let handle = self.tickets.issue(&id, &query.query, &caller.name)?;
        self.register(&id);
        let ticket = TicketStatementQuery {
            statement_handle: handle.into(),
        };
        self.info(
            &schema,
            ticket.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let caller = self.check(&request)?;
        let started = Instant::now();
        let handle = self.tickets.open(&ticket.statement_handle, &caller.name)?;
        let stream = self
            .execute(&handle.id, &caller, &handle.sql, &[], started)
            .await?;
        Ok(Response::new(stream))
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let caller = self.check(&request)?;
        let sql = placeholders::numbered(&query.query)?;
        let df = crate::warehouse::query::plan(&self.ctx, &sql, false)
            .await
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let types = df
            .logical_plan()
            .get_parameter_types()
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let params: Vec<Field> = (1..=types.len())
            .map(|i| {
                let t = types.get(&format!("${i}")).cloned().flatten();
                Field::new(format!("${i}"), t.unwrap_or(DataType::Utf8), true)
            })
            .collect();
        let id = uuid::Uuid::new_v4().to_string();
        self.prepared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                id.clone(),
                Prepared {
                    user: caller.name,
                    sql,
                    params: Vec::new(),
                },
            );
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: id.into_bytes().into(),
            dataset_schema: ipc_schema(&plain_schema(df.schema().as_arrow()))?,
            parameter_schema: ipc_schema(&Schema::new(params))?,
        })
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let caller = self.check(&request)?;
        let id = prepared_id(&query.prepared_statement_handle)?;
        // `into_peekable` keeps the first message, which carries the schema
        let stream = request
            .into_inner()
            .into_peekable()
            .map_err(FlightError::from);
        let batches: Vec<RecordBatch> =
            arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(stream)
                .try_collect()
                .await
                .map_err(|e| {
                    Status::invalid_argument(format!("cannot read the parameters: {e}"))
                })?;
        let params = match batches.iter().find(|b| b.num_rows() > 0) {
            None => Vec::new(),
            Some(b) if b.num_rows() > 1 => {
                return Err(Status::invalid_argument(
                    "one set of parameters at a time: bind a single row",
                ));
            }
            Some(b) => b
                .columns()
                .iter()
                .map(|c| ScalarValue::try_from_array(c, 0).map(union_value))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| Status::invalid_argument(e.to_string()))?,
        };
        let mut prepared = self.prepared.lock().unwrap_or_else(|e| e.into_inner());
        let p = prepared
            .get_mut(&id)
            .filter(|p| p.user == caller.name)
            .ok_or_else(no_such_prepared)?;
        p.params = params;
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(id.into_bytes().into()),
        })
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let caller = self.check(&request)?;
        let id = prepared_id(&cmd.prepared_statement_handle)?;
        let (sql, params) = self.prepared_statement(&id, &caller)?;
        let df = self.plan(&sql, &params).await?;
        self.register(&id);
        let schema = plain_schema(df.schema().as_arrow());
        self.info(&schema, cmd.as_any().encode_to_vec(), request.into_inner())
    }

    async fn do_get_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let caller = self.check(&request)?;
        let started = Instant::now();
        let id = prepared_id(&cmd.prepared_statement_handle)?;
        let (sql, params) = self.prepared_statement(&id, &caller)?;
        let stream = self.execute(&id, &caller, &sql, &params, started).await?;
        Ok(Response::new(stream))
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<(), Status> {
        let caller = self.check(&request)?;
        let id = prepared_id(&query.prepared_statement_handle)?;
        let mut prepared = self.prepared.lock().unwrap_or_else(|e| e.into_inner());
        if prepared.get(&id).is_some_and(|p| p.user == caller.name) {
            prepared.remove(&id);
        }
        Ok(())
    }

    async fn do_action_cancel_query(
        &self,
        query: ActionCancelQueryRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<ActionCancelQueryResult, Status> {
        let caller = self.check(&request)?;
        let info = FlightInfo::decode(query.info)
            .map_err(|e| Status::invalid_argument(format!("not a FlightInfo: {e}")))?;
        let ticket = info
            .endpoint
            .first()
            .and_then(|e| e.ticket.clone())
            .ok_or_else(|| Status::invalid_argument("the FlightInfo has no ticket"))?;
        let any = Any::decode(ticket.ticket)
            .map_err(|e| Status::invalid_argument(format!("not a ticket of this server: {e}")))?;
        let id = if let Ok(Some(t)) = any.unpack::<TicketStatementQuery>() {
            self.tickets.open(&t.statement_handle, &caller.name)?.id
        } else if let Ok(Some(p)) = any.unpack::<CommandPreparedStatementQuery>() {
            let id = prepared_id(&p.prepared_statement_handle)?;
            self.prepared_statement(&id, &caller)?;
            id
        } else {
            return Err(Status::invalid_argument("not a ticket of this server"));
        };
        let q = self.queries.lock().unwrap_or_else(|e| e.into_inner());
        let result = match q.get(&id) {
            Some((_, tx)) => {
                tx.send_replace(true);
                tracing::info!(query = %id, "query cancelled");
                CANCEL_CANCELLED
            }
            None => CANCEL_NOT_CANCELLABLE,
        };
        Ok(ActionCancelQueryResult { result })
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.check(&request)?;
        let schema = query.into_builder().schema();
        self.info(
            &schema,
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.check(&request)?;
        let mut b = query.into_builder();
        b.append(CATALOG);
        Self::reply(b.build())
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.check(&request)?;
        let schema = query.clone().into_builder().schema();
        self.info(
            &schema,
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.check(&request)?;
        let mut b = query.into_builder();
        b.append(CATALOG, SCHEMA);
        Self::reply(b.build())
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.check(&request)?;
        let schema = query.clone().into_builder().schema();
        self.info(
            &schema,
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.check(&request)?;
        let mut b = query.into_builder();
        for (name, schema) in self.tables().await? {
            b.append(CATALOG, SCHEMA, name, "TABLE", &schema)
                .map_err(|e| Status::internal(e.to_string()))?;
        }
        Self::reply(b.build())
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.check(&request)?;
        let schema = query.into_builder().schema();
        self.info(
            &schema,
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.check(&request)?;
        let mut b = query.into_builder();
        b.append("TABLE");
        Self::reply(b.build())
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.check(&request)?;
        let schema = query.clone().into_builder(&self.sql_info).schema();
        self.info(
            &schema,
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.check(&request)?;
        Self::reply(query.into_builder(&self.sql_info).build())
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

impl Service {
    /// The SQL and parameters of `caller`'s prepared statement `id`.
    fn prepared_statement(
        &self,
        id: &str,
        caller: &Caller,
    ) -> Result<(String, Vec<ScalarValue>), Status> {
        let prepared = self.prepared.lock().unwrap_or_else(|e| e.into_inner());
        let p = prepared
            .get(id)
            .filter(|p| p.user == caller.name)
            .ok_or_else(no_such_prepared)?;
        Ok((p.sql.clone(), p.params.clone()))
    }
}
