//! What TLS adds to a connection: the peer's verified identity, and why a handshake failed.
//!
//! The types here exist with or without the `tls` feature, so that [`Context`](crate::Context)
//! and [`Error`](crate::Error) look the same in every build. With the feature, the TLS streams
//! of `tokio-rustls` are [`Transport`](crate::Transport)s, and a server's connection reads the
//! client's certificate (mutual TLS) into the [`PeerIdentity`] its handlers see.
//!
//! The certificate is read with a small DER walker of its own (subject and subject
//! alternative names only), not a full X.509 parser: rustls has already verified the chain,
//! so nothing here decides trust; it only names what was verified.

use std::fmt;
use std::net::IpAddr;

/// Who the peer proved to be with its certificate: read from the end-entity certificate that
/// rustls verified during the handshake (mutual TLS on a server; the server's on a client).
///
/// ```no_run
/// # async fn handler() {
/// if let Some(ctx) = rpc::Context::current() {
///     if let Some(identity) = ctx.peer_identity() {
///         println!("call from {} ({:?})", identity.subject(), identity.dns_names().collect::<Vec<_>>());
///     }
/// }
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    subject: String,
    common_name: Option<String>,
    sans: Vec<SubjectAltName>,
    der: Vec<u8>,
}

/// One subject alternative name of a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubjectAltName {
    /// A DNS name (`dNSName`).
    Dns(String),
    /// An IP address (`iPAddress`).
    Ip(IpAddr),
    /// An email address (`rfc822Name`).
    Email(String),
    /// A URI (`uniformResourceIdentifier`), as SPIFFE ids are.
    Uri(String),
}

impl fmt::Display for SubjectAltName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubjectAltName::Dns(name) => write!(f, "DNS:{name}"),
            SubjectAltName::Ip(ip) => write!(f, "IP:{ip}"),
            SubjectAltName::Email(email) => write!(f, "email:{email}"),
            SubjectAltName::Uri(uri) => write!(f, "URI:{uri}"),
        }
    }
}

impl PeerIdentity {
    /// Reads the subject and subject alternative names of a DER certificate; `None` if it
    /// does not parse as one. Trust is not checked here (rustls did that).
    pub fn from_der(der: &[u8]) -> Option<PeerIdentity> {
        let (subject, common_name, sans) = der::read_certificate(der)?;
        Some(PeerIdentity {
            subject,
            common_name,
            sans,
            der: der.to_vec(),
        })
    }

    /// The subject's distinguished name, as `CN=alice, O=Example` in the order the
    /// certificate lists its parts (empty if the certificate has none, as some issued for
    /// SANs only).
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The subject's common name (`CN`), if it has one.
    pub fn common_name(&self) -> Option<&str> {
        self.common_name.as_deref()
    }

    /// The subject alternative names, in the certificate's order.
    pub fn sans(&self) -> &[SubjectAltName] {
        &self.sans
    }

    /// The DNS names among the subject alternative names.
    pub fn dns_names(&self) -> impl Iterator<Item = &str> {
        self.sans.iter().filter_map(|san| match san {
            SubjectAltName::Dns(name) => Some(name.as_str()),
            _ => None,
        })
    }

    /// The certificate itself (DER), for checks beyond the subject and names.
    pub fn certificate_der(&self) -> &[u8] {
        &self.der
    }
}

impl fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.subject)?;
        for (i, san) in self.sans.iter().enumerate() {
            f.write_str(if i == 0 { " [" } else { ", " })?;
            write!(f, "{san}")?;
        }
        if !self.sans.is_empty() {
            f.write_str("]")?;
        }
        Ok(())
    }
}

/// Why a TLS handshake failed, as the side that noticed saw it. Each message says what to
/// fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The peer's certificate is not signed by a CA this side trusts.
    #[error("the server's certificate is not signed by a CA this client trusts ({detail}); add the CA that signed it to the client's roots")]
    UntrustedCertificate {
        /// rustls' account.
        detail: String,
    },
    /// The server's certificate does not name the host the client connected to.
    #[error("the server's certificate is not valid for the name `{name}` ({detail}); connect by a name the certificate lists, or set the name the client checks (server_name)")]
    WrongName {
        /// The name the client checked.
        name: String,
        /// rustls' account.
        detail: String,
    },
    /// The peer's certificate has expired or is not valid yet.
    #[error("the server's certificate has expired or is not yet valid ({detail}); renew it, and check both clocks")]
    Expired {
        /// rustls' account.
        detail: String,
    },
    /// The server requires a client certificate (mutual TLS) and this client sent none.
    #[error("the server requires a client certificate (mutual TLS) and this client presented none; give the client an identity (certificate and key)")]
    ClientCertificateRequired,
    /// The server refused the client's certificate.
    #[error("the server refused this client's certificate ({detail}); is it signed by a CA the server trusts, valid now, and meant for client authentication?")]
    ClientCertificateRejected {
        /// The alert the server sent.
        detail: String,
    },
    /// The peer closed the connection during the handshake without a TLS answer: most
    /// likely a plaintext server.
    #[error("the server closed the connection during the TLS handshake without a TLS answer; is it a plaintext server? connect without TLS, or turn TLS on at the server")]
    NotTls,
    /// Any other handshake failure.
    #[error("TLS handshake failed: {detail}")]
    Handshake {
        /// rustls' account.
        detail: String,
    },
    /// The TLS settings themselves are unusable (a PEM file without a certificate, a key
    /// that does not parse, no trusted roots).
    #[error("TLS configuration: {detail}")]
    Config {
        /// What is wrong with them.
        detail: String,
    },
}

#[cfg(feature = "tls")]
mod transport {
    use tokio::io::{ReadHalf, WriteHalf};

    use super::PeerIdentity;
    use crate::transport::{PeerAddr, Transport};

    impl<T: Transport> Transport for tokio_rustls::client::TlsStream<T> {
        type Reader = ReadHalf<Self>;
        type Writer = WriteHalf<Self>;

        fn into_split(self) -> (Self::Reader, Self::Writer) {
            tokio::io::split(self)
        }

        fn peer(&self) -> PeerAddr {
            self.get_ref().0.peer()
        }

        fn peer_identity(&self) -> Option<PeerIdentity> {
            let certs = self.get_ref().1.peer_certificates()?;
            PeerIdentity::from_der(certs.first()?)
        }
    }

    impl<T: Transport> Transport for tokio_rustls::server::TlsStream<T> {
        type Reader = ReadHalf<Self>;
        type Writer = WriteHalf<Self>;

        fn into_split(self) -> (Self::Reader, Self::Writer) {
            tokio::io::split(self)
        }

        fn peer(&self) -> PeerAddr {
            self.get_ref().0.peer()
        }

        fn peer_identity(&self) -> Option<PeerIdentity> {
            let certs = self.get_ref().1.peer_certificates()?;
            PeerIdentity::from_der(certs.first()?)
        }
    }
}

/// Just enough DER to read a certificate's subject and subject alternative names.
mod der {
    use std::net::IpAddr;

    use super::SubjectAltName;

    const SEQUENCE: u8 = 0x30;
    const SET: u8 = 0x31;
    const OID: u8 = 0x06;
    const OCTET_STRING: u8 = 0x04;
    const BOOLEAN: u8 = 0x01;
    /// `[3] EXPLICIT`: a certificate's extensions.
    const EXTENSIONS: u8 = 0xA3;
    /// id-ce-subjectAltName, 2.5.29.17.
    const SAN_OID: &[u8] = &[0x55, 0x1D, 0x11];
    /// id-at-commonName, 2.5.4.3.
    const CN_OID: &[u8] = &[0x55, 0x04, 0x03];

    /// One tag-length-value: the tag, the value, and what follows it.
    fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = input.split_first()?;
        let (&first, mut rest) = rest.split_first()?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let count = usize::from(first & 0x7F);
            if count == 0 || count > 4 || rest.len() < count {
                return None;
            }
            let (bytes, after) = rest.split_at(count);
            rest = after;
            bytes
                .iter()
                .fold(0usize, |len, &b| (len << 8) | usize::from(b))
        };
        if rest.len() < len {
            return None;
        }
        let (value, after) = rest.split_at(len);
        Some((tag, value, after))
    }

    /// The value of a TLV that must carry `tag`.
    fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
        let (got, value, rest) = tlv(input)?;
        (got == tag).then_some((value, rest))
    }

    /// Every TLV in `input`, in order.
    fn each(mut input: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
        std::iter::from_fn(move || {
            let (tag, value, rest) = tlv(input)?;
            input = rest;
            Some((tag, value))
        })
    }

    /// Subject (rendered), its common name, and the subject alternative names.
    pub(super) fn read_certificate(
        der: &[u8],
    ) -> Option<(String, Option<String>, Vec<SubjectAltName>)> {
        let (cert, _) = expect(der, SEQUENCE)?;
        let (tbs, _) = expect(cert, SEQUENCE)?;
        let mut rest = tbs;
        // Optional version, `[0] EXPLICIT`.
        if rest.first() == Some(&0xA0) {
            rest = tlv(rest)?.2;
        }
        // serialNumber, signature, issuer, validity.
        for _ in 0..4 {
            rest = tlv(rest)?.2;
        }
        let (subject, rest) = expect(rest, SEQUENCE)?;
        // subjectPublicKeyInfo.
        let (_, rest) = expect(rest, SEQUENCE)?;
        let (name, common_name) = read_name(subject)?;
        let mut sans = Vec::new();
        for (tag, value) in each(rest) {
            if tag == EXTENSIONS {
                let (extensions, _) = expect(value, SEQUENCE)?;
                for (_, extension) in each(extensions) {
                    if let Some(found) = read_san_extension(extension) {
                        sans = found;
                    }
                }
            }
        }
        Some((name, common_name, sans))
    }

    fn read_name(name: &[u8]) -> Option<(String, Option<String>)> {
        let mut parts = Vec::new();
        let mut common_name = None;
        for (tag, rdn) in each(name) {
            if tag != SET {
                return None;
            }
            for (_, attribute) in each(rdn) {
                let (oid, rest) = expect(attribute, OID)?;
                let (string_tag, value, _) = tlv(rest)?;
                let value = read_string(string_tag, value);
                if oid == CN_OID && common_name.is_none() {
                    common_name = Some(value.clone());
                }
                parts.push(format!("{}={value}", attribute_name(oid)));
            }
        }
        Some((parts.join(", "), common_name))
    }

    fn read_string(tag: u8, value: &[u8]) -> String {
        match tag {
            // BMPString: UTF-16, big endian.
            0x1E => {
                let units: Vec<u16> = value
                    .chunks_exact(2)
                    .map(|pair| u16::from_be_bytes([pair[0], pair[1]]))
                    .collect();
                String::from_utf16_lossy(&units)
            }
            // UTF8String, PrintableString, IA5String, TeletexString and the rest.
            _ => String::from_utf8_lossy(value).into_owned(),
        }
    }

    fn attribute_name(oid: &[u8]) -> String {
        match oid {
            [0x55, 0x04, 0x03] => "CN".into(),
            [0x55, 0x04, 0x06] => "C".into(),
            [0x55, 0x04, 0x07] => "L".into(),
            [0x55, 0x04, 0x08] => "ST".into(),
            [0x55, 0x04, 0x0A] => "O".into(),
            [0x55, 0x04, 0x0B] => "OU".into(),
            other => dotted(other),
        }
    }

    /// An object identifier as `1.2.840.113549`.
    fn dotted(oid: &[u8]) -> String {
        let mut arcs: Vec<u64> = Vec::new();
        let mut value: u64 = 0;
        for &byte in oid {
            value = (value << 7) | u64::from(byte & 0x7F);
            if byte & 0x80 == 0 {
                if arcs.is_empty() {
                    let first = (value / 40).min(2);
                    arcs.push(first);
                    arcs.push(value - first * 40);
                } else {
                    arcs.push(value);
                }
                value = 0;
            }
        }
        arcs.iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(".")
    }

    /// The names of a subjectAltName extension; `None` for any other extension.
    fn read_san_extension(extension: &[u8]) -> Option<Vec<SubjectAltName>> {
        let (oid, mut rest) = expect(extension, OID)?;
        if oid != SAN_OID {
            return None;
        }
        if rest.first() == Some(&BOOLEAN) {
            rest = tlv(rest)?.2;
        }
        let (value, _) = expect(rest, OCTET_STRING)?;
        let (names, _) = expect(value, SEQUENCE)?;
        Some(
            each(names)
                .filter_map(|(tag, value)| match tag {
                    0x81 => Some(SubjectAltName::Email(read_string(tag, value))),
                    0x82 => Some(SubjectAltName::Dns(read_string(tag, value))),
                    0x86 => Some(SubjectAltName::Uri(read_string(tag, value))),
                    0x87 => match value.len() {
                        4 => <[u8; 4]>::try_from(value)
                            .ok()
                            .map(|v| SubjectAltName::Ip(IpAddr::from(v))),
                        16 => <[u8; 16]>::try_from(value)
                            .ok()
                            .map(|v| SubjectAltName::Ip(IpAddr::from(v))),
                        _ => None,
                    },
                    _ => None,
                })
                .collect(),
        )
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn dotted_oids() {
            assert_eq!(
                dotted(&[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D]),
                "1.2.840.113549"
            );
            assert_eq!(dotted(&[0x55, 0x04, 0x03]), "2.5.4.3");
        }

        #[test]
        fn truncated_input_is_refused_not_panicked_on() {
            assert!(tlv(&[0x30, 0x05, 0x01]).is_none());
            assert!(tlv(&[0x30, 0x85, 0, 0, 0, 0, 1]).is_none());
            assert!(read_certificate(&[]).is_none());
            assert!(read_certificate(&[0x30, 0x02, 0x30, 0x00]).is_none());
        }
    }
}

/// Reading certificates and keys from PEM, and the crypto provider both ends use.
#[cfg(feature = "tls")]
pub mod pem {
    use std::path::Path;
    use std::sync::Arc;

    use rustls::crypto::CryptoProvider;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    use super::TlsError;

    /// The crypto provider of every config this crate builds: *ring*, which builds with a C
    /// compiler alone (rustls' default, aws-lc-rs, also wants cmake, and nasm on some hosts).
    pub fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    /// Every certificate in `pem` (a chain: the end-entity certificate first); at least one.
    pub fn certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| config(format!("{what}: {err}")))?;
        if certs.is_empty() {
            return Err(config(format!(
                "{what}: no PEM certificate (-----BEGIN CERTIFICATE-----) found"
            )));
        }
        Ok(certs)
    }

    /// The private key in `pem` (PKCS#8, PKCS#1 or SEC1).
    pub fn key(pem: &[u8], what: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
        PrivateKeyDer::from_pem_slice(pem).map_err(|err| {
            config(format!(
                "{what}: no usable PEM private key ({err}); PKCS#8, PKCS#1 and SEC1 keys are read"
            ))
        })
    }

    /// The contents of the file at `path`.
    pub fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
        std::fs::read(path).map_err(|err| config(format!("cannot read {}: {err}", path.display())))
    }

    /// A [`TlsError::Config`] saying `detail`.
    pub fn config(detail: impl Into<String>) -> TlsError {
        TlsError::Config {
            detail: detail.into(),
        }
    }
}
