//! A handler's context reaches the tasks it spawns with `rpc::Context::spawn`: they read the
//! call's metadata and deadline, and a call they make to another service inherits the
//! deadline. Two servers over TCP: a front service whose handler spawns, and a back service
//! that reports what the call reaching it carried.

mod support;

use std::time::Duration;

use rpc::Context;
use serde::{Deserialize, Serialize};
use support::{start, within};

/// What a call carried when it reached a handler (or what a spawned task saw).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Seen {
    /// Microseconds left until the deadline, if there was one.
    remaining_micros: Option<u64>,
    /// The `user` metadata entry.
    user: Option<String>,
}

impl Seen {
    fn now() -> Option<Seen> {
        Context::with_current(|ctx| Seen {
            remaining_micros: ctx.remaining().map(micros),
            user: ctx.metadata().get_str("user").map(String::from),
        })
    }

    fn remaining(&self) -> Option<Duration> {
        self.remaining_micros.map(Duration::from_micros)
    }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

#[rpc::service]
trait Back {
    /// What the call reaching this handler carried.
    async fn observe(&self) -> Seen;
}

struct BackImpl;

impl Back for BackImpl {
    async fn observe(&self) -> Seen {
        Seen::now().expect("inside a handler")
    }
}

/// What the front handler learned: in the handler itself, in the task it spawned, and in the
/// back service called from that task.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Report {
    handler: Option<Seen>,
    task: Option<Seen>,
    back: Seen,
}

#[rpc::service]
trait Front {
    /// Spawns a task with `Context::spawn` that calls the back service, forwarding `user`.
    async fn with_context(&self) -> Report;
    /// The same with a plain `tokio::spawn`: the task has no context.
    async fn without_context(&self) -> Report;
}

struct FrontImpl {
    back: BackClient,
}

/// The spawned task's work: look at the context, then call the back service, forwarding the
/// metadata the task can see (metadata is not forwarded to calls by itself).
async fn task_body(back: BackClient) -> Result<(Option<Seen>, Seen), rpc::Error> {
    let task = Seen::now();
    let mut call = back.observe();
    if let Some(user) = task.as_ref().and_then(|seen| seen.user.clone()) {
        call = call.metadata("user", user);
    }
    Ok((task, call.await?))
}

impl Front for FrontImpl {
    async fn with_context(&self) -> Report {
        // The handler looks first, then spawns (arguments are evaluated in order).
        report(Seen::now(), Context::spawn(task_body(self.back.clone()))).await
    }

    async fn without_context(&self) -> Report {
        report(Seen::now(), tokio::spawn(task_body(self.back.clone()))).await
    }
}

/// What the handler saw, next to what its spawned task and the back service saw.
async fn report(
    handler: Option<Seen>,
    spawned: tokio::task::JoinHandle<Result<(Option<Seen>, Seen), rpc::Error>>,
) -> Report {
    let (task, back) = spawned
        .await
        .expect("task ran")
        .expect("back service answered");
    Report {
        handler,
        task,
        back,
    }
}

/// The outer call's deadline: far below the client's 30 s default, so an inherited deadline
/// is told apart from a fresh default one.
const OUTER: Duration = Duration::from_secs(5);

async fn front() -> (support::Running, support::Running, FrontClient) {
    let back_server = start(rpc::Server::builder().serve(BackImpl.into_service())).await;
    let back = BackClient::connect(back_server.addr)
        .await
        .expect("connect to the back service");
    let front_server = start(rpc::Server::builder().serve(FrontImpl { back }.into_service())).await;
    let client = FrontClient::connect(front_server.addr)
        .await
        .expect("connect to the front service");
    (back_server, front_server, client)
}

#[tokio::test]
async fn a_spawned_task_sees_the_handlers_context_and_its_calls_inherit_the_deadline() {
    let (_back, _front, client) = front().await;
    let report = within(
        "front call",
        client.with_context().timeout(OUTER).metadata("user", "ada"),
    )
    .await
    .expect("front call");

    let handler = report.handler.expect("the handler has a context");
    let task = report.task.expect("the spawned task sees the context");
    assert_eq!(handler.user.as_deref(), Some("ada"));
    assert_eq!(
        task.user.as_deref(),
        Some("ada"),
        "the task reads the metadata"
    );
    let handler_left = handler.remaining().expect("the handler has a deadline");
    let task_left = task.remaining().expect("the task sees the deadline");
    assert!(handler_left <= OUTER, "{handler_left:?}");
    assert!(
        task_left <= handler_left,
        "{task_left:?} > {handler_left:?}"
    );

    // The call made from the task carried the handler's deadline (not the 30 s default) and
    // the metadata the task forwarded.
    let back_left = report
        .back
        .remaining()
        .expect("the inner call has a deadline");
    assert!(back_left > Duration::ZERO);
    assert!(back_left <= task_left, "{back_left:?} > {task_left:?}");
    assert_eq!(report.back.user.as_deref(), Some("ada"));
}

#[tokio::test]
async fn a_task_from_plain_tokio_spawn_has_no_context_and_its_calls_get_the_default_deadline() {
    // The counterpart that shows `Context::spawn` is what carries the context.
    let (_back, _front, client) = front().await;
    let report = within(
        "front call",
        client
            .without_context()
            .timeout(OUTER)
            .metadata("user", "ada"),
    )
    .await
    .expect("front call");
    assert!(report.handler.is_some_and(|seen| seen.user.is_some()));
    assert_eq!(report.task, None, "tokio::spawn does not carry the context");
    let back_left = report.back.remaining().expect("the default deadline");
    assert!(
        back_left > OUTER,
        "{back_left:?}: the default, not inherited"
    );
    assert_eq!(report.back.user, None);
}

#[tokio::test]
async fn outside_a_handler_context_spawn_is_a_plain_spawn() {
    let seen = Context::spawn(async { Context::current().is_none() }).await;
    assert!(seen.expect("task ran"), "no context outside a handler");
}
