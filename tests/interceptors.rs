//! Interceptors: server-wide and per service, refusing with `Unauthenticated` and
//! `PermissionDenied` before the handler runs, leaving values for the handler, asking an auth
//! service over TCP within the call's deadline, seeing the mutual-TLS identity; on the
//! client, a bearer token that refreshes itself and calls refused locally.

mod support;

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rpc::{ClientInterceptor, Context, Error, Metadata, Method, ServerInterceptor};
use support::certs::{client_tls, Ca, Usage};
use support::start;

/// A service behind a check.
#[rpc::service]
pub trait Vault {
    /// Who the interceptor said the caller is.
    async fn open(&self) -> String;
    /// The authorization metadata the handler saw.
    async fn token(&self) -> Option<String>;
}

/// A service open to all.
#[rpc::service]
pub trait Lobby {
    /// Always answers.
    async fn hello(&self) -> String;
}

/// Says whose a token is.
#[rpc::service]
pub trait Auth {
    /// The user a token belongs to, and the time the calling handler had left (ms).
    async fn check(&self, token: String) -> (Option<String>, Option<u64>);
}

/// The user an interceptor authenticated, for the handler.
#[derive(Debug, Clone, PartialEq)]
struct User(String);

#[derive(Clone, Default)]
struct VaultImpl {
    opened: Arc<AtomicUsize>,
}

impl Vault for VaultImpl {
    async fn open(&self) -> String {
        self.opened.fetch_add(1, Ordering::SeqCst);
        Context::current()
            .and_then(|ctx| ctx.extensions().get::<User>().map(|user| user.0.clone()))
            .unwrap_or_else(|| "nobody".into())
    }

    async fn token(&self) -> Option<String> {
        Context::current()?
            .metadata()
            .get_str("authorization")
            .map(String::from)
    }
}

struct LobbyImpl;

impl Lobby for LobbyImpl {
    async fn hello(&self) -> String {
        "welcome".into()
    }
}

/// Knows one token; reports the deadline the caller left it.
struct AuthImpl;

impl Auth for AuthImpl {
    async fn check(&self, token: String) -> (Option<String>, Option<u64>) {
        let left = Context::current()
            .and_then(|ctx| ctx.remaining())
            .map(|left| left.as_millis() as u64);
        let user = (token == "Bearer ada-token").then(|| "ada".to_string());
        (user, left)
    }
}

/// Accepts one fixed token.
struct FixedToken {
    seen: Arc<AtomicUsize>,
}

#[rpc::async_trait]
impl ServerInterceptor for FixedToken {
    async fn intercept(&self, ctx: &mut Context) -> Result<(), Error> {
        self.seen.fetch_add(1, Ordering::SeqCst);
        match ctx.metadata().get_str("authorization") {
            Some("Bearer ada-token") => {
                ctx.extensions_mut().insert(User("ada".into()));
                Ok(())
            }
            Some(_) => Err(Error::PermissionDenied {
                reason: "this token may not open the vault".into(),
            }),
            None => Err(Error::Unauthenticated {
                reason: format!("{} needs an authorization token", ctx.method()),
            }),
        }
    }
}

/// Asks the auth service, over TCP, within the call's deadline.
struct AskAuth {
    auth: AuthClient,
    deadline_left: Arc<Mutex<Option<u64>>>,
}

#[rpc::async_trait]
impl ServerInterceptor for AskAuth {
    async fn intercept(&self, ctx: &mut Context) -> Result<(), Error> {
        let token = ctx
            .metadata()
            .get_str("authorization")
            .ok_or_else(|| Error::Unauthenticated {
                reason: "no token".into(),
            })?
            .to_string();
        let (user, left) = self.auth.check(token).await?;
        *self.deadline_left.lock().expect("lock") = left;
        let user = user.ok_or_else(|| Error::PermissionDenied {
            reason: "the auth service does not know this token".into(),
        })?;
        ctx.extensions_mut().insert(User(user));
        Ok(())
    }
}

/// Adds a fixed token to every call.
struct SendToken(&'static str);

#[rpc::async_trait]
impl ClientInterceptor for SendToken {
    async fn intercept(&self, _: Method, metadata: &mut Metadata) -> Result<(), Error> {
        metadata.insert("authorization", self.0);
        Ok(())
    }
}

#[tokio::test]
async fn a_server_interceptor_refuses_typed_and_leaves_the_user_for_the_handler() {
    let vault = VaultImpl::default();
    let seen = Arc::new(AtomicUsize::new(0));
    let server = start(
        rpc::Server::builder()
            .interceptor(FixedToken { seen: seen.clone() })
            .serve(vault.clone().into_service()),
    )
    .await;

    let anonymous = VaultClient::connect(server.addr).await.expect("connect");
    let err = anonymous.open().await.expect_err("no token");
    assert!(
        matches!(&err, Error::Unauthenticated { reason } if reason == "Vault.open needs an authorization token"),
        "{err}"
    );
    assert!(!err.may_have_run());

    let wrong = rpc::Client::builder()
        .interceptor(SendToken("Bearer mallory-token"))
        .connect(server.addr)
        .await
        .expect("connect");
    let err = VaultClient::new(wrong)
        .open()
        .await
        .expect_err("wrong token");
    assert!(matches!(err, Error::PermissionDenied { .. }), "{err}");
    assert!(!err.may_have_run());
    // Neither refused call reached the handler.
    assert_eq!(vault.opened.load(Ordering::SeqCst), 0);

    let ada = rpc::Client::builder()
        .interceptor(SendToken("Bearer ada-token"))
        .connect(server.addr)
        .await
        .expect("connect");
    assert_eq!(
        VaultClient::new(ada.clone()).open().await.expect("open"),
        "ada"
    );
    assert_eq!(vault.opened.load(Ordering::SeqCst), 1);
    assert_eq!(seen.load(Ordering::SeqCst), 3);

    // The health service is not intercepted: a balancer's probe needs no token.
    let health = rpc::health::HealthClient::new(ada);
    health.check(String::new()).await.expect("health check");
    assert_eq!(seen.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_service_interceptor_covers_its_service_only() {
    let vault = VaultImpl::default();
    let seen = Arc::new(AtomicUsize::new(0));
    let server = start(
        rpc::Server::builder()
            .serve(rpc::Intercepted::new(
                vault.clone().into_service(),
                FixedToken { seen: seen.clone() },
            ))
            .serve(LobbyImpl.into_service()),
    )
    .await;
    let client = rpc::Client::connect(server.addr).await.expect("connect");
    assert_eq!(
        LobbyClient::new(client.clone())
            .hello()
            .await
            .expect("public"),
        "welcome"
    );
    let err = VaultClient::new(client).open().await.expect_err("no token");
    assert!(matches!(err, Error::Unauthenticated { .. }), "{err}");
    assert_eq!(seen.load(Ordering::SeqCst), 1);
    assert_eq!(vault.opened.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn an_interceptor_asks_an_auth_service_over_tcp_within_the_calls_deadline() {
    let auth = start(rpc::Server::builder().serve(AuthImpl.into_service())).await;
    let deadline_left = Arc::new(Mutex::new(None));
    let interceptor = AskAuth {
        auth: AuthClient::connect(auth.addr).await.expect("auth client"),
        deadline_left: deadline_left.clone(),
    };
    let server = start(
        rpc::Server::builder()
            .interceptor(interceptor)
            .serve(VaultImpl::default().into_service()),
    )
    .await;
    let client = rpc::Client::builder()
        .interceptor(SendToken("Bearer ada-token"))
        .connect(server.addr)
        .await
        .expect("connect");
    let vault = VaultClient::new(client);
    let user = vault
        .open()
        .timeout(Duration::from_secs(3))
        .await
        .expect("open");
    assert_eq!(user, "ada");
    // The auth call carried what was left of the 3 s the caller gave (not its own 30 s
    // default).
    let left = deadline_left.lock().expect("lock").expect("a deadline");
    assert!(left <= 3000, "{left} ms");

    let stranger = rpc::Client::builder()
        .interceptor(SendToken("Bearer stranger"))
        .connect(server.addr)
        .await
        .expect("connect");
    let err = VaultClient::new(stranger)
        .open()
        .await
        .expect_err("unknown token");
    assert!(matches!(err, Error::PermissionDenied { .. }), "{err}");
}

/// Lets in only the client certificate whose common name is `alice`.
struct OnlyAlice;

#[rpc::async_trait]
impl ServerInterceptor for OnlyAlice {
    async fn intercept(&self, ctx: &mut Context) -> Result<(), Error> {
        let name = ctx.peer_identity().and_then(|id| id.common_name());
        match name {
            Some("alice") => {
                ctx.extensions_mut().insert(User("alice".into()));
                Ok(())
            }
            Some(other) => Err(Error::PermissionDenied {
                reason: format!("{other} may not open the vault"),
            }),
            None => Err(Error::Unauthenticated {
                reason: "no client certificate".into(),
            }),
        }
    }
}

#[tokio::test]
async fn an_interceptor_decides_on_the_mutual_tls_identity() {
    let (servers, clients) = (Ca::new("server CA"), Ca::new("client CA"));
    let issued = servers.issue("server", &["localhost"], Usage::Server);
    let tls = issued
        .server_tls()
        .require_client_certs(clients.pem().as_bytes())
        .expect("mtls");
    let server = start(
        rpc::Server::builder()
            .tls(tls)
            .interceptor(OnlyAlice)
            .serve(VaultImpl::default().into_service()),
    )
    .await;
    let endpoint = format!("localhost:{}", server.addr.port());
    let as_user = |cn: &str| {
        let cert = clients.issue(cn, &[cn], Usage::Client);
        client_tls(&servers)
            .identity_pem(cert.cert_pem.as_bytes(), cert.key_pem.as_bytes())
            .expect("identity")
    };
    let alice = rpc::Client::builder()
        .tls(as_user("alice"))
        .connect(&endpoint)
        .await
        .expect("alice connects");
    assert_eq!(VaultClient::new(alice).open().await.expect("open"), "alice");
    let bob = rpc::Client::builder()
        .tls(as_user("bob"))
        .connect(&endpoint)
        .await
        .expect("bob connects");
    let err = VaultClient::new(bob).open().await.expect_err("bob");
    assert!(
        matches!(&err, Error::PermissionDenied { reason } if reason == "bob may not open the vault"),
        "{err}"
    );
}

/// A bearer token that renews itself once it expires: each renewal is a new token.
#[derive(Clone, Default)]
struct Refreshing {
    state: Arc<Mutex<Option<(String, tokio::time::Instant)>>>,
    renewals: Arc<AtomicU32>,
}

impl Refreshing {
    const TTL: Duration = Duration::from_secs(3600);

    /// Makes the current token expire now (as an hour passing would).
    fn expire(&self) {
        if let Some((_, expires)) = self.state.lock().expect("lock").as_mut() {
            *expires = tokio::time::Instant::now();
        }
    }

    /// Stands for a call to a token endpoint.
    async fn renew(&self) -> String {
        tokio::task::yield_now().await;
        let n = self.renewals.fetch_add(1, Ordering::SeqCst) + 1;
        format!("Bearer token-{n}")
    }
}

#[rpc::async_trait]
impl ClientInterceptor for Refreshing {
    async fn intercept(&self, _: Method, metadata: &mut Metadata) -> Result<(), Error> {
        let now = tokio::time::Instant::now();
        let cached = self
            .state
            .lock()
            .expect("lock")
            .as_ref()
            .filter(|(_, expires)| now < *expires)
            .map(|(token, _)| token.clone());
        let token = match cached {
            Some(token) => token,
            None => {
                let token = self.renew().await;
                *self.state.lock().expect("lock") = Some((token.clone(), now + Self::TTL));
                token
            }
        };
        metadata.insert("authorization", token);
        Ok(())
    }
}

#[tokio::test]
async fn a_client_interceptor_refreshes_its_token_and_later_calls_use_the_new_one() {
    let server = start(rpc::Server::builder().serve(VaultImpl::default().into_service())).await;
    let tokens = Refreshing::default();
    let client = rpc::Client::builder()
        .interceptor(tokens.clone())
        .connect(server.addr)
        .await
        .expect("connect");
    let vault = VaultClient::new(client);
    let seen = || async { vault.token().await.expect("call").expect("a token") };
    assert_eq!(seen().await, "Bearer token-1");
    assert_eq!(seen().await, "Bearer token-1");
    tokens.expire();
    assert_eq!(seen().await, "Bearer token-2");
    assert_eq!(seen().await, "Bearer token-2");
    assert_eq!(tokens.renewals.load(Ordering::SeqCst), 2);
}

/// Refuses, locally, every call to the vault.
struct NoVault;

#[rpc::async_trait]
impl ClientInterceptor for NoVault {
    async fn intercept(&self, method: Method, _: &mut Metadata) -> Result<(), Error> {
        if method.service() == "Vault" {
            return Err(Error::PermissionDenied {
                reason: format!("this client may not call {method}"),
            });
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_client_interceptor_refuses_a_call_locally_and_nothing_is_sent() {
    let vault = VaultImpl::default();
    let server = start(
        rpc::Server::builder()
            .serve(vault.clone().into_service())
            .serve(LobbyImpl.into_service()),
    )
    .await;
    let client = rpc::Client::builder()
        .interceptor(NoVault)
        .connect(server.addr)
        .await
        .expect("connect");
    let err = VaultClient::new(client.clone())
        .open()
        .await
        .expect_err("refused locally");
    assert!(
        matches!(&err, Error::PermissionDenied { reason } if reason == "this client may not call Vault.open"),
        "{err}"
    );
    assert_eq!(
        LobbyClient::new(client).hello().await.expect("allowed"),
        "welcome"
    );
    assert_eq!(vault.opened.load(Ordering::SeqCst), 0);
}
