//! Certificates made at test time (rcgen), and a log capture for the server's side of a
//! failed handshake.

use std::io::Write;
use std::sync::{Arc, Mutex};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// A certificate authority that issues leaf certificates.
pub(crate) struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A certificate and its key, as PEM.
pub(crate) struct Issued {
    pub(crate) cert_pem: String,
    pub(crate) key_pem: String,
}

/// What a leaf certificate is for.
#[derive(Clone, Copy)]
pub(crate) enum Usage {
    Server,
    Client,
}

impl Ca {
    pub(crate) fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("self-signed");
        Ca { cert, key }
    }

    pub(crate) fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A leaf for `names` (DNS names or IP addresses) with common name `cn`.
    pub(crate) fn issue(&self, cn: &str, names: &[&str], usage: Usage) -> Issued {
        self.issue_with(cn, names, usage, |_| {})
    }

    /// A leaf that expired in 2001.
    pub(crate) fn issue_expired(&self, cn: &str, names: &[&str], usage: Usage) -> Issued {
        self.issue_with(cn, names, usage, |params| {
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        })
    }

    fn issue_with(
        &self,
        cn: &str,
        names: &[&str],
        usage: Usage,
        adjust: impl FnOnce(&mut CertificateParams),
    ) -> Issued {
        let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "rpc tests");
        params.extended_key_usages = vec![match usage {
            Usage::Server => ExtendedKeyUsagePurpose::ServerAuth,
            Usage::Client => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        adjust(&mut params);
        let key = KeyPair::generate().expect("key");
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("signed");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

impl Issued {
    pub(crate) fn server_tls(&self) -> rpc::tls::ServerTls {
        rpc::tls::ServerTls::from_pem(self.cert_pem.as_bytes(), self.key_pem.as_bytes())
            .expect("server tls")
    }
}

/// A client that trusts `ca`.
pub(crate) fn client_tls(ca: &Ca) -> rpc::tls::ClientTls {
    rpc::tls::ClientTls::from_pem(ca.pem().as_bytes()).expect("client tls")
}

/// Log lines written while the guard lives, by tasks on this thread (a current-thread
/// runtime: the server's tasks included).
#[derive(Clone, Default)]
pub(crate) struct Logs(Arc<Mutex<Vec<u8>>>);

thread_local! {
    /// Where this thread's log lines go while a capture lasts.
    static SINK: std::cell::RefCell<Option<Arc<Mutex<Vec<u8>>>>> = const { std::cell::RefCell::new(None) };
}

/// Writes a log line to the capturing thread's sink, if it has one.
struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        SINK.with(|sink| {
            if let Some(sink) = &*sink.borrow() {
                sink.lock().expect("log lock").extend_from_slice(buf);
            }
        });
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Ends a capture: this thread's lines are no longer kept.
pub(crate) struct LogGuard(());

impl Drop for LogGuard {
    fn drop(&mut self) {
        SINK.with(|sink| sink.borrow_mut().take());
    }
}

impl Logs {
    /// Captures every log line of this thread until the guard drops.
    ///
    /// One global subscriber routes each line to the sink of the thread that wrote it. A
    /// subscriber set per thread (`set_default`) lost lines when tests ran in parallel:
    /// tracing caches per call site whether anyone listens, and a site first reached on a
    /// thread without a subscriber could be cached as unheard for the others.
    pub(crate) fn capture() -> (Logs, LogGuard) {
        static INSTALLED: std::sync::Once = std::sync::Once::new();
        INSTALLED.call_once(|| {
            let subscriber = tracing_subscriber::fmt()
                .with_ansi(false)
                .with_max_level(tracing::Level::DEBUG)
                .with_writer(|| LogWriter)
                .finish();
            // Fails only if the test binary set another global subscriber first.
            tracing::subscriber::set_global_default(subscriber)
                .expect("no other global subscriber in this test binary");
        });
        let logs = Logs::default();
        SINK.with(|sink| *sink.borrow_mut() = Some(logs.0.clone()));
        (logs, LogGuard(()))
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log lock")).into_owned()
    }
}
