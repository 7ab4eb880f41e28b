//! Logins and tickets of `tauc-job serve` under attack: repeated wrong
//! passwords back off, refusals of known and unknown users cost the same,
//! and only tickets the server issued to the caller run.

use std::time::{Duration, Instant};

use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::{CommandPreparedStatementQuery, ProstMessageExt, TicketStatementQuery};
use arrow_flight::{FlightDescriptor, HandshakeRequest, Ticket};
use futures::TryStreamExt;
use prost::Message;
use tonic::transport::Channel;

use crate::harness::*;
use crate::serve::{add_user, start_serve, users_cmd};

async fn channel(port: u16) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .expect("connection")
}

fn basic(user: &str, password: &str) -> String {
    // standard base64 (RFC 4648), padded
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = format!("{user}:{password}").into_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    format!("Basic {out}")
}

/// One Flight handshake with basic credentials: the bearer token, or the
/// refusal (its code and message).
async fn login(ch: &Channel, user: &str, password: &str) -> Result<String, tonic::Status> {
    let mut client = FlightServiceClient::new(ch.clone());
    let mut req = tonic::Request::new(futures::stream::iter([HandshakeRequest {
        protocol_version: 0,
        payload: Default::default(),
    }]));
    req.metadata_mut()
        .insert("authorization", basic(user, password).parse().unwrap());
    let resp = client.handshake(req).await?;
    let token = resp
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .expect("a bearer token")
        .to_string();
    Ok(token)
}

fn bearer<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    req
}

/// `DoGet` of `ticket` as the holder of `token`: the rows' count, or the
/// refusal's message.
async fn do_get(ch: &Channel, token: &str, ticket: Vec<u8>) -> Result<usize, String> {
    let mut client = FlightServiceClient::new(ch.clone());
    let stream = client
        .do_get(bearer(Ticket::new(ticket), token))
        .await
        .map_err(|s| s.message().to_string())?
        .into_inner()
        .map_err(|e| arrow_flight::error::FlightError::Tonic(Box::new(e)));
    let batches: Vec<_> =
        arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(stream)
            .try_collect()
            .await
            .map_err(|e| e.to_string())?;
    Ok(batches.iter().map(|b| b.num_rows()).sum())
}

/// The ticket `GetFlightInfo` hands `token`'s holder for `sql`.
async fn ticket_for(ch: &Channel, token: &str, sql: &str) -> Vec<u8> {
    let mut client = FlightServiceClient::new(ch.clone());
    let cmd = arrow_flight::sql::CommandStatementQuery {
        query: sql.into(),
        transaction_id: None,
    };
    let descriptor = FlightDescriptor::new_cmd(cmd.as_any().encode_to_vec());
    let info = client
        .get_flight_info(bearer(descriptor, token))
        .await
        .expect("flight info")
        .into_inner();
    info.endpoint[0].ticket.clone().unwrap().ticket.to_vec()
}

/// A statement ticket whose handle is `handle`.
fn statement_ticket(handle: &[u8]) -> Vec<u8> {
    TicketStatementQuery {
        statement_handle: handle.to_vec().into(),
    }
    .as_any()
    .encode_to_vec()
}

/// The handle inside a statement ticket.
fn handle_of(ticket: &[u8]) -> Vec<u8> {
    let any = arrow_flight::sql::Any::decode(ticket).unwrap();
    any.unpack::<TicketStatementQuery>()
        .unwrap()
        .unwrap()
        .statement_handle
        .to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn only_tickets_the_server_issued_to_the_caller_run() {
    let w = World::new("serve-tickets");
    let _logs = crate::chain::LogsOnFailure(w.dir.path().to_path_buf());
    let users = add_user(&w, "alice", "alices own secret");
    let users_s = users.to_str().unwrap();
    users_cmd(&w, &["add", "bob", "--users", users_s], "bobs own secret\n").ok();
    let (_server, port) = start_serve(&w, "serve-tickets", &users, &[]);
    let ch = channel(port).await;
    let alice = login(&ch, "alice", "alices own secret").await.unwrap();
    let bob = login(&ch, "bob", "bobs own secret").await.unwrap();

    // alice's own ticket runs
    let ticket = ticket_for(&ch, &alice, "SELECT 1 AS one").await;
    assert_eq!(do_get(&ch, &alice, ticket.clone()).await, Ok(1));

    // a ticket forged from the old format (valid JSON, no signature)
    let forged = statement_ticket(
        br#"{"id":"00000000-0000-4000-8000-000000000000","sql":"SELECT 'forged' AS x"}"#,
    );
    let e = do_get(&ch, &alice, forged)
        .await
        .expect_err("a forged ticket ran");
    assert!(e.contains("ticket not issued by this server"), "{e}");

    // alice's ticket with its statement changed
    let handle = handle_of(&ticket);
    let text = String::from_utf8(handle).expect("a text handle");
    assert!(text.contains("SELECT 1 AS one"), "{text}");
    let changed = text.replace("SELECT 1 AS one", "SELECT 2 AS one");
    let e = do_get(&ch, &alice, statement_ticket(changed.as_bytes()))
        .await
        .expect_err("a changed ticket ran");
    assert!(e.contains("ticket not issued by this server"), "{e}");
    // and garbage
    let e = do_get(&ch, &alice, statement_ticket(b"\xff\x00garbage"))
        .await
        .expect_err("garbage ran");
    assert!(e.contains("ticket not issued by this server"), "{e}");

    // bob cannot run alice's ticket
    let e = do_get(&ch, &bob, ticket.clone())
        .await
        .expect_err("bob ran alice's ticket");
    assert!(e.contains("ticket not issued by this server"), "{e}");

    // nor her prepared statement
    let mut client = FlightServiceClient::new(ch.clone());
    let create = arrow_flight::sql::ActionCreatePreparedStatementRequest {
        query: "SELECT 3 AS three".into(),
        transaction_id: None,
    };
    let action =
        arrow_flight::Action::new("CreatePreparedStatement", create.as_any().encode_to_vec());
    let first = client
        .do_action(bearer(action, &alice))
        .await
        .unwrap()
        .into_inner()
        .try_next()
        .await
        .unwrap()
        .expect("a prepared statement");
    let prepared = arrow_flight::sql::Any::decode(first.body)
        .unwrap()
        .unpack::<arrow_flight::sql::ActionCreatePreparedStatementResult>()
        .unwrap()
        .unwrap();
    let cmd = CommandPreparedStatementQuery {
        prepared_statement_handle: prepared.prepared_statement_handle,
    };
    let descriptor = FlightDescriptor::new_cmd(cmd.as_any().encode_to_vec());
    let e = client
        .get_flight_info(bearer(descriptor.clone(), &bob))
        .await
        .expect_err("bob used alice's prepared statement");
    assert!(e.message().contains("no such prepared statement"), "{e}");
    let e = do_get(&ch, &bob, cmd.as_any().encode_to_vec())
        .await
        .expect_err("bob ran alice's prepared statement");
    assert!(e.contains("no such prepared statement"), "{e}");
    // alice can
    client
        .get_flight_info(bearer(descriptor, &alice))
        .await
        .expect("alice's prepared statement");
    assert_eq!(
        do_get(&ch, &alice, cmd.as_any().encode_to_vec()).await,
        Ok(1)
    );
}

/// The seconds a back-off refusal names ("try again in N s").
fn wait_named(status: &tonic::Status) -> u64 {
    let m = status.message();
    let rest = m
        .split("try again in ")
        .nth(1)
        .unwrap_or_else(|| panic!("no wait named: {m}"));
    rest.split(' ').next().unwrap().parse().expect("seconds")
}

#[tokio::test(flavor = "multi_thread")]
async fn logins_back_off_after_repeated_failures() {
    let w = World::new("serve-backoff");
    let _logs = crate::chain::LogsOnFailure(w.dir.path().to_path_buf());
    let password = "alices own secret";
    let users = add_user(&w, "alice", password);
    // a first window long enough to be seen on a loaded machine
    let (_server, port) = start_serve(&w, "serve-backoff", &users, &["--login-backoff", "4s"]);
    let ch = channel(port).await;

    // five wrong passwords are checked and refused
    for i in 0..5 {
        let e = login(&ch, "alice", &format!("guess number {i}"))
            .await
            .expect_err("a wrong password passed");
        assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e}");
        assert!(e.message().contains("wrong user name or password"), "{e}");
    }
    // then even the right password is refused, naming the wait
    let e = login(&ch, "alice", password)
        .await
        .expect_err("a login during the back-off passed");
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e}");
    assert!(e.message().contains("too many failed logins"), "{e}");
    let wait = wait_named(&e);
    assert!((1..=4).contains(&wait), "{e}");
    // the same answer for a user that does not exist: nothing learnt
    let e2 = login(&ch, "nobody", "whatever it is")
        .await
        .expect_err("an unknown user passed");
    assert_eq!(e2.code(), tonic::Code::ResourceExhausted, "{e2}");
    assert!(e2.message().contains("too many failed logins"), "{e2}");

    // after the window the right password works again
    tokio::time::sleep(Duration::from_millis(wait * 1000 + 300)).await;
    login(&ch, "alice", password)
        .await
        .expect("the login after the window");

    // the tester's attack: 200 wrong passwords from 8 threads; almost
    // all are refused without a check
    let started = Instant::now();
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let ch = ch.clone();
            tokio::spawn(async move {
                let mut codes = Vec::new();
                for i in 0..25 {
                    let e = login(&ch, "alice", &format!("thread {t} guess {i}"))
                        .await
                        .expect_err("a guess passed");
                    codes.push(e.code());
                }
                codes
            })
        })
        .collect();
    let mut codes = Vec::new();
    for t in tasks {
        codes.extend(t.await.unwrap());
    }
    let checked = codes
        .iter()
        .filter(|c| **c == tonic::Code::Unauthenticated)
        .count();
    let backed_off = codes
        .iter()
        .filter(|c| **c == tonic::Code::ResourceExhausted)
        .count();
    eprintln!(
        "200 guesses in {:?}: {checked} checked, {backed_off} backed off",
        started.elapsed()
    );
    assert_eq!(checked + backed_off, 200, "{codes:?}");
    assert!(checked <= 5, "{checked} passwords checked of 200");
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_and_known_users_are_refused_alike() {
    let w = World::new("serve-timing");
    let _logs = crate::chain::LogsOnFailure(w.dir.path().to_path_buf());
    let users = add_user(&w, "alice", "alices own secret");
    // no back-off in the way of 30 wrong logins
    let (_server, port) = start_serve(&w, "serve-timing", &users, &["--login-attempts", "1000"]);
    let ch = channel(port).await;
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    // interleaved, so a burst of load hits both alike
    for i in 0..15 {
        let t = Instant::now();
        let e = login(&ch, "alice", &format!("wrong {i}"))
            .await
            .unwrap_err();
        known.push(t.elapsed());
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        let t = Instant::now();
        let e2 = login(&ch, &format!("nobody{i}"), &format!("wrong {i}"))
            .await
            .unwrap_err();
        unknown.push(t.elapsed());
        // the same answer, word for word
        assert_eq!(e.message(), e2.message());
    }
    let (k, u) = (median(known), median(unknown));
    eprintln!("median refusal: known user {k:?}, unknown user {u:?}");
    assert!(
        k < u * 2 && u < k * 2,
        "refusals of a known user take {k:?}, of an unknown one {u:?}: the difference tells which names exist"
    );
}
