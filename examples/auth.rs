//! A TLS server that wants a bearer token on every call but one public method, a client
//! that attaches its token to every call, and what a caller without one sees.
//!
//! Run it with:
//!
//! ```text
//! cargo run --example auth
//! ```
//!
//! The certificates are made when it starts (a CA, and a certificate for `localhost` signed
//! by it); a real deployment reads PEM files (`ServerTls::from_pem_files`,
//! `ClientTls::from_pem_file`). The token check is a server interceptor: it runs before every
//! handler, lets `Notes.motd` through, and leaves the caller's name for the handlers.

use std::error::Error;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use rpc::{ClientInterceptor, Context, Metadata, Method, ServerInterceptor};

/// Notes kept by the server.
#[rpc::service]
pub trait Notes {
    /// The message of the day: public, no token needed.
    async fn motd(&self) -> String;
    /// Adds a note, signed with the caller's name; returns how many there are.
    async fn add(&self, note: String) -> usize;
    /// Every note.
    async fn list(&self) -> Vec<String>;
}

#[derive(Default)]
struct NoteBook {
    notes: Mutex<Vec<String>>,
}

/// Who the token belongs to, left for the handlers by the interceptor.
struct User(String);

impl Notes for Arc<NoteBook> {
    async fn motd(&self) -> String {
        "Welcome! Everything but this needs a token.".into()
    }

    async fn add(&self, note: String) -> usize {
        let user = Context::current()
            .and_then(|ctx| ctx.extensions().get::<User>().map(|user| user.0.clone()))
            .unwrap_or_default();
        let mut notes = self.notes.lock().unwrap_or_else(|e| e.into_inner());
        notes.push(format!("{user}: {note}"));
        notes.len()
    }

    async fn list(&self) -> Vec<String> {
        self.notes.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The server's check: a known bearer token on every call but `Notes.motd`.
struct RequireToken;

const PUBLIC: Method = Method::new("Notes", "motd");

#[rpc::async_trait]
impl ServerInterceptor for RequireToken {
    async fn intercept(&self, ctx: &mut Context) -> Result<(), rpc::Error> {
        if ctx.method() == PUBLIC {
            return Ok(());
        }
        let user = match ctx.metadata().get_str("authorization") {
            // A real server would ask its identity provider here (it may: this is async,
            // and calls made here inherit the call's deadline).
            Some("Bearer s3cret-ada") => "ada",
            Some(_) => {
                return Err(rpc::Error::PermissionDenied {
                    reason: "this token is not valid here".into(),
                })
            }
            None => {
                return Err(rpc::Error::Unauthenticated {
                    reason: format!("{} needs a bearer token", ctx.method()),
                })
            }
        };
        ctx.extensions_mut().insert(User(user.into()));
        Ok(())
    }
}

/// The client's side: the token goes with every call.
struct Bearer(&'static str);

#[rpc::async_trait]
impl ClientInterceptor for Bearer {
    async fn intercept(&self, _: Method, metadata: &mut Metadata) -> Result<(), rpc::Error> {
        metadata.insert("authorization", format!("Bearer {}", self.0));
        Ok(())
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn Error>> {
    let (ca_pem, cert_pem, key_pem) = make_certificates()?;

    let tls = rpc::tls::ServerTls::from_pem(cert_pem.as_bytes(), key_pem.as_bytes())?;
    let server = rpc::Server::builder()
        .tls(tls)
        .interceptor(RequireToken)
        .serve(Arc::new(NoteBook::default()).into_service())
        .bind("127.0.0.1:0")
        .await?;
    let port = server.local_addr().ok_or("server is not on TCP")?.port();
    let handle = server.handle();
    let running = tokio::spawn(server.run());
    // The client checks the certificate against the name it dials.
    let endpoint = format!("localhost:{port}");
    println!("TLS server listening on {endpoint}");
    let trust = rpc::tls::ClientTls::from_pem(ca_pem.as_bytes())?;

    // Without a token: the public method answers, the others refuse, typed.
    let anonymous = NotesClient::new(
        rpc::Client::builder()
            .tls(trust.clone())
            .connect(&endpoint)
            .await?,
    );
    println!("anonymous motd: {}", anonymous.motd().await?);
    match anonymous.list().await {
        Err(err @ rpc::Error::Unauthenticated { .. }) => println!("anonymous list: {err}"),
        other => return Err(format!("expected Unauthenticated, got {other:?}").into()),
    }

    // A token the server does not accept.
    let stranger = NotesClient::new(
        rpc::Client::builder()
            .tls(trust.clone())
            .interceptor(Bearer("guess"))
            .connect(&endpoint)
            .await?,
    );
    match stranger.add("hi".into()).await {
        Err(err @ rpc::Error::PermissionDenied { .. }) => println!("stranger add: {err}"),
        other => return Err(format!("expected PermissionDenied, got {other:?}").into()),
    }

    // With the token, on every call, attached by the client's interceptor.
    let ada = NotesClient::new(
        rpc::Client::builder()
            .tls(trust)
            .interceptor(Bearer("s3cret-ada"))
            .connect(&endpoint)
            .await?,
    );
    ada.add("TLS is on".into()).await?;
    let count = ada.add("tokens are checked".into()).await?;
    println!("ada added {count} notes: {:?}", ada.list().await?);

    handle.shutdown();
    running.await?;
    Ok(())
}

/// A CA, and a certificate for `localhost` it signed: (CA, certificate, key), as PEM.
fn make_certificates() -> Result<(String, String, String), rcgen::Error> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "auth example CA");
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let mut leaf = CertificateParams::new(vec!["localhost".to_string()])?;
    leaf.distinguished_name.push(DnType::CommonName, "notes");
    let key = KeyPair::generate()?;
    let cert = leaf.signed_by(&key, &ca_cert, &ca_key)?;
    Ok((ca_cert.pem(), cert.pem(), key.serialize_pem()))
}
