//! A chat room: a call that streams both ways. Each member sends a stream of lines and gets
//! back a stream of everyone's messages; sending `88` leaves the room (as in the classic UDP
//! chat tutorial).
//!
//! ```text
//! cargo run --example chat                               # scripted demo with three members, exits
//! cargo run --example chat -- server 127.0.0.1:7001      # terminal 1 (Ctrl-C stops it)
//! cargo run --example chat -- client 127.0.0.1:7001 ann  # terminal 2: type lines, `88` leaves
//! cargo run --example chat -- client 127.0.0.1:7001 bob  # terminal 3
//! ```
//!
//! The server relays every message through one `tokio::sync::broadcast` channel with a fixed
//! capacity, so a member that stops reading costs bounded memory: when it falls behind by more
//! than [`BACKLOG`] messages it skips ahead and gets a [`Message::Missed`] notice instead. A
//! chat session lasts as long as the member likes, so the client calls `join` with
//! `.no_deadline()`: a call's deadline (30 s by default) covers its whole stream.

use std::error::Error;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt;
use tokio::sync::{broadcast, mpsc};

/// The line that leaves the room.
const LEAVE: &str = "88";

/// Messages the room holds for a member who is slow to read them; beyond that, the member
/// skips ahead and is told how many it missed.
const BACKLOG: usize = 64;

/// What a member of the room receives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Message {
    /// `name` entered the room.
    Joined {
        /// Who joined.
        name: String,
    },
    /// `from` said `text`.
    Line {
        /// Who said it.
        from: String,
        /// What they said.
        text: String,
    },
    /// `name` left the room (sent `88`, ended their input, or disconnected).
    Left {
        /// Who left.
        name: String,
    },
    /// This member read too slowly and skipped `count` messages.
    Missed {
        /// How many messages were skipped.
        count: u64,
    },
    /// The server is shutting down; this is the last message.
    Closing,
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Message::Joined { name } => write!(f, "* {name} joined"),
            Message::Line { from, text } => write!(f, "{from}: {text}"),
            Message::Left { name } => write!(f, "* {name} left"),
            Message::Missed { count } => write!(f, "* (you missed {count} messages)"),
            Message::Closing => write!(f, "* the room is closing"),
        }
    }
}

/// A chat room.
#[rpc::service]
pub trait Chat {
    /// Joins the room as `name`: the lines sent go to everyone, and everyone's messages come
    /// back, starting with this member's own join notice. The returned stream ends with this
    /// member's own leave notice, after it sends `88` or ends `lines`.
    async fn join(&self, name: String, lines: rpc::Stream<String>) -> rpc::Stream<Message>;
}

/// A message on the room's channel, with the member who caused it.
#[derive(Clone)]
struct Event {
    member: u64,
    message: Message,
}

/// The room; clones share it.
#[derive(Clone)]
struct Room {
    events: broadcast::Sender<Event>,
    next_member: Arc<AtomicU64>,
}

impl Room {
    fn new() -> Self {
        Room {
            events: broadcast::channel(BACKLOG).0,
            next_member: Arc::new(AtomicU64::new(0)),
        }
    }

    fn publish(&self, member: u64, message: Message) {
        // Fails only when nobody is listening, which is fine.
        let _ = self.events.send(Event { member, message });
    }

    /// Ends every member's stream with [`Message::Closing`]. Until then a member's `join`
    /// call is in flight, and a shutting-down server would wait for it.
    fn close(&self) {
        self.publish(u64::MAX, Message::Closing);
    }
}

impl Chat for Room {
    async fn join(&self, name: String, mut lines: rpc::Stream<String>) -> rpc::Stream<Message> {
        let me = self.next_member.fetch_add(1, Ordering::Relaxed);
        // Subscribe before announcing, so the member sees its own join first.
        let inbox = self.events.subscribe();
        self.publish(me, Message::Joined { name: name.clone() });

        // Relay this member's lines to the room until `88`, the end of its input, or a broken
        // stream (the client went away); then announce that the member left.
        let events = self.events.clone();
        let gone = Arc::new(AtomicBool::new(false));
        let gone_flag = gone.clone();
        tokio::spawn(async move {
            while let Some(Ok(text)) = lines.next().await {
                if text.trim() == LEAVE {
                    break;
                }
                let from = name.clone();
                let _ = events.send(Event {
                    member: me,
                    message: Message::Line { from, text },
                });
            }
            gone_flag.store(true, Ordering::SeqCst);
            let _ = events.send(Event {
                member: me,
                message: Message::Left { name },
            });
        });

        // Everything the room says, up to and including this member's own leave notice.
        let listening = Some((inbox, gone));
        rpc::Stream::new(futures::stream::unfold(
            listening,
            move |listening| async move {
                let (mut inbox, gone) = listening?;
                let message = match inbox.recv().await {
                    Ok(Event {
                        member,
                        message: message @ Message::Left { .. },
                    }) if member == me => return Some((message, None)),
                    Ok(Event {
                        message: Message::Closing,
                        ..
                    }) => return Some((Message::Closing, None)),
                    Ok(event) => event.message,
                    Err(broadcast::error::RecvError::Lagged(count)) => {
                        // The skipped messages may include this member's own leave notice; if it
                        // has left, end here rather than wait for a notice that will not come.
                        if gone.load(Ordering::SeqCst) {
                            return Some((Message::Missed { count }, None));
                        }
                        Message::Missed { count }
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                };
                Some((message, Some((inbox, gone))))
            },
        ))
    }
}

const USAGE: &str = "usage: chat [server ADDR | client ADDR NAME]";

#[tokio::main]
async fn main() {
    let code = match run().await {
        Ok(()) => 0,
        Err(err) => {
            // Display, not Debug: the message is written for people.
            eprintln!("error: {err}");
            1
        }
    };
    // A client's stdin reader may still be blocked in a read that tokio cannot cancel, and
    // returning from `main` would wait for it until the next Enter: leave at once instead.
    std::process::exit(code)
}

async fn run() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] => demo().await,
        ["server", addr] => serve(addr).await,
        ["client", addr, name] => client(addr, name).await,
        _ => Err(USAGE.into()),
    }
}

async fn serve(addr: &str) -> Result<(), Box<dyn Error>> {
    let room = Room::new();
    let server = rpc::Server::builder()
        .serve(room.clone().into_service())
        .bind(addr)
        .await?;
    println!("chat room open on {addr}; Ctrl-C to close it");
    server
        .run_until(async {
            let _ = tokio::signal::ctrl_c().await;
            println!("closing the room");
            // Members' streams end, so their calls finish within the shutdown's grace period.
            room.close();
        })
        .await;
    Ok(())
}

/// A stream of lines for `join`, fed through the returned sender.
fn outbox() -> (mpsc::Sender<String>, rpc::Stream<String>) {
    let (tx, rx) = mpsc::channel(16);
    let lines = futures::stream::unfold(rx, |mut rx| async move {
        let line = rx.recv().await?;
        Some((line, rx))
    });
    (tx, rpc::Stream::new(lines))
}

/// Joins as `name`, sends the lines typed on stdin and prints what the room says.
async fn client(addr: &str, name: &str) -> Result<(), Box<dyn Error>> {
    let chat = ChatClient::connect(addr).await?;
    let (tx, lines) = outbox();
    // A session lasts as long as the member likes: no deadline.
    let mut messages = chat.join(name.into(), lines).no_deadline().await?;
    println!("joined as {name}; type lines, `{LEAVE}` to leave");

    tokio::spawn(async move {
        let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = stdin.next_line().await {
            let leaving = line.trim() == LEAVE;
            if tx.send(line).await.is_err() || leaving {
                // Stop reading: tokio's stdin read cannot be cancelled, and a pending one
                // would keep the process alive until the next Enter.
                break;
            }
        }
    });

    // The session ends well with this member's own leave notice or the room closing; a
    // broken stream or one that just stops is a failure.
    while let Some(message) = messages.next().await {
        let message = message.map_err(|err| format!("connection lost: {err}"))?;
        println!("{message}");
        match &message {
            Message::Left { name: who } if who == name => return Ok(()),
            Message::Closing => return Ok(()),
            _ => {}
        }
    }
    Err("the room ended the session without a notice".into())
}

/// One scripted member in the demo.
struct Member {
    name: &'static str,
    say: mpsc::Sender<String>,
    hear: rpc::Stream<Message>,
}

impl Member {
    async fn join(addr: std::net::SocketAddr, name: &'static str) -> Result<Self, Box<dyn Error>> {
        // Each member has its own connection, as separate programs would.
        let chat = ChatClient::connect(addr).await?;
        let (say, lines) = outbox();
        let hear = chat.join(name.into(), lines).no_deadline().await?;
        Ok(Member { name, say, hear })
    }

    async fn hear_one(&mut self) -> Result<Message, Box<dyn Error>> {
        match self.hear.next().await {
            Some(message) => Ok(message?),
            None => Err(format!("{}'s stream ended early", self.name).into()),
        }
    }
}

/// Every member in `room` reads the next message; they all see the same one.
async fn everyone_hears(room: &mut [Member]) -> Result<(), Box<dyn Error>> {
    for member in room.iter_mut() {
        let message = member.hear_one().await?;
        println!("    [{:<3}] {message}", member.name);
    }
    Ok(())
}

async fn demo() -> Result<(), Box<dyn Error>> {
    let server = rpc::Server::builder()
        .serve(Room::new().into_service())
        .bind("127.0.0.1:0")
        .await?;
    let addr = server.local_addr().ok_or("server is not on TCP")?;
    let handle = server.handle();
    let running = tokio::spawn(server.run());
    println!("chat room on {addr}");

    // Members join one by one; each join is seen by everyone present before the next one, so
    // the output is the same on every run.
    let mut room: Vec<Member> = Vec::new();
    for name in ["ann", "bob", "cy"] {
        println!("{name} joins");
        room.push(Member::join(addr, name).await?);
        everyone_hears(&mut room).await?;
    }

    let script = [
        (0, "hi all"),
        (1, "hello ann"),
        (2, "hey, what's new?"),
        (0, "streams both ways, apparently"),
    ];
    for (who, text) in script {
        println!("{} says {text:?}", room[who].name);
        room[who].say.send(text.into()).await?;
        everyone_hears(&mut room).await?;
    }

    // Each leaves with `88`: everyone hears it, and the leaver's stream ends right after.
    while !room.is_empty() {
        println!("{} sends {LEAVE}", room[0].name);
        room[0].say.send(LEAVE.into()).await?;
        everyone_hears(&mut room).await?;
        let mut gone = room.remove(0);
        match gone.hear.next().await {
            None => println!("    ({}'s stream ended)", gone.name),
            Some(other) => {
                return Err(format!("{} heard {other:?} after leaving", gone.name).into())
            }
        }
    }

    handle.shutdown();
    running.await?;
    println!("room closed");
    Ok(())
}
