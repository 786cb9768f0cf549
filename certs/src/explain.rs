//! Turning TLS failures into sentences a person can act on.
//!
//! rustls reports precise errors ("InvalidCertificate(UnknownIssuer)",
//! "AlertReceived(CertificateExpired)"), but they arrive wrapped in I/O, HTTP/2
//! and gRPC errors, and they speak TLS. These helpers dig the rustls error out of
//! the chain and say what it means for clusterlab.

use std::error::Error as StdError;

use rustls::{AlertDescription, CertificateError};

/// The error and its causes, joined with ": ": tonic's own words for a failed
/// connection are only "transport error".
pub fn chain(err: &(dyn StdError + 'static)) -> String {
    let mut parts = vec![err.to_string()];
    let mut next = err.source();
    while let Some(e) = next {
        let text = e.to_string();
        if !parts.last().is_some_and(|last| last.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

/// Finds the rustls error somewhere in an error's chain of causes, if there is one.
///
/// `std::io::Error` hides the error it wraps from `source()`, so each I/O error in
/// the chain is opened with `get_ref()` as well.
pub fn find_rustls_error<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(err);
    while let Some(err) = next {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        let wrapped = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref());
        if let Some(found) = wrapped.and_then(|inner| find_rustls_error(inner)) {
            return Some(found);
        }
        next = err.source();
    }
    None
}

/// True when something in an error's chain of causes timed out: an I/O
/// timeout (a connect timeout), or hyper's own (an unanswered keepalive ping,
/// whose error is no `io::Error`).
pub fn timed_out(err: &(dyn StdError + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        let io_timeout = e
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut);
        if io_timeout || e.to_string().contains("timed out") {
            return true;
        }
        next = e.source();
    }
    false
}

/// True when the other side hung up: reset, closed, or a broken pipe. The
/// caller knows whether that was during setup, before any answer.
///
/// Dialing in plaintext, that is what a TLS-only port does: it reads the
/// HTTP/2 preface, finds no TLS ClientHello, and closes. The errors arrive as
/// an `io::Error` of one of those kinds or, when hyper notices first, as its
/// "connection closed", with no `io::Error` at all.
pub fn closed_during_setup(err: &(dyn StdError + 'static)) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionReset, UnexpectedEof};
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return matches!(io.kind(), ConnectionReset | BrokenPipe | UnexpectedEof);
        }
        let text = e.to_string();
        if text.contains("connection closed") || text.contains("broken pipe") {
            return true;
        }
        next = e.source();
    }
    false
}

/// Describes why a server refused a client's handshake, for the server's log.
pub fn rejected_client(err: &rustls::Error) -> String {
    match err {
        rustls::Error::NoCertificatesPresented => {
            "the client presented no certificate; mutual TLS requires one".into()
        }
        rustls::Error::InvalidCertificate(cert) => {
            format!("client certificate refused: {}", certificate_problem(cert))
        }
        rustls::Error::PeerIncompatible(why) => {
            format!("the client cannot speak what we require (TLS 1.3): {why:?}")
        }
        // Said by the side whose certificate the client refused (a revoked
        // node, say): it is ours that is revoked, not the client's.
        rustls::Error::AlertReceived(alert) if is_about_a_certificate(*alert) => {
            format!(
                "the client refused our certificate: {}",
                alert_meaning(*alert)
            )
        }
        rustls::Error::AlertReceived(alert) => {
            format!(
                "the client aborted the handshake: {}",
                alert_meaning(*alert)
            )
        }
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            "the client did not speak TLS".into()
        }
        other => other.to_string(),
    }
}

/// Describes why a client could not complete a TLS connection to a server.
pub fn failed_connection(err: &rustls::Error) -> String {
    match err {
        rustls::Error::AlertReceived(alert) => match alert {
            AlertDescription::ProtocolVersion => {
                "the server refused our TLS version; clusterlab speaks TLS 1.3 only".into()
            }
            alert if is_about_a_certificate(*alert) => format!(
                "the server rejected our certificate: {} (the server's log says more)",
                alert_meaning(*alert)
            ),
            // Not about our certificate: a server that speaks no HTTP/2
            // (`NoApplicationProtocol`), say.
            alert => format!(
                "the server aborted the handshake: {} (the server's log says more)",
                alert_meaning(*alert)
            ),
        },
        rustls::Error::InvalidCertificate(cert) => format!(
            "we refused the server's certificate: {}",
            certificate_problem(cert)
        ),
        rustls::Error::PeerIncompatible(why) => {
            format!("the server cannot speak what we require (TLS 1.3): {why:?}")
        }
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            "the server did not answer in TLS; is it running with --tls plaintext, or is \
             this a web port (the dashboard, /metrics) rather than a gRPC one (the \
             balancer's 7000, a node's 7100)?"
                .into()
        }
        other => other.to_string(),
    }
}

/// What a certificate error means, in words.
pub fn certificate_problem(err: &CertificateError) -> String {
    match err {
        CertificateError::UnknownIssuer => {
            "unknown issuer: it was not signed by the cluster's CA (ca.pem)".into()
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            "expired: its validity period has ended; issue a new one".into()
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "not valid yet: its validity period has not started (or a clock is wrong)".into()
        }
        CertificateError::Revoked => "revoked: it is on the cluster's revocation list".into(),
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            "wrong purpose: its extended key usage does not allow this role \
             (serverAuth to act as a server, clientAuth to act as a client)"
                .into()
        }
        // The CA's name matched ours but its key did not: every `init` names
        // its CA alike, so most often one side's certificates are from
        // another, older PKI: ca.pem copied out of compose before
        // `down -v` made a new one, or a certificate `init --force` left.
        CertificateError::BadSignature => {
            "bad signature: it was signed by a different CA with the same name as ours, so \
             the two sides' certificates come from different PKIs (one side's are stale: \
             copied before `docker compose down -v` made new ones, or left over from \
             `clusterlab-certs init --force`? copy or issue them again), or it has been \
             tampered with"
                .into()
        }
        CertificateError::Other(other) => match other.0.downcast_ref::<webpki::Error>() {
            Some(webpki::Error::CaUsedAsEndEntity) => {
                "a CA certificate, not a leaf: a CA's certificate may only sign other \
                 certificates, never name a process"
                    .into()
            }
            Some(webpki::Error::EndEntityUsedAsCa) => {
                "signed by a leaf certificate, which may not sign anything".into()
            }
            _ => other.to_string(),
        },
        other => format!("{other:?}"),
    }
}

/// The TLS alerts a server sends when it refuses a client certificate.
fn alert_meaning(alert: AlertDescription) -> String {
    match alert {
        AlertDescription::UnknownCA => {
            "unknown issuer (not signed by a CA the other side trusts)".into()
        }
        // TLS has one alert for both ends of the validity period.
        AlertDescription::CertificateExpired => "certificate expired (or not yet valid)".into(),
        AlertDescription::CertificateRevoked => "certificate revoked".into(),
        AlertDescription::CertificateRequired => "a certificate is required".into(),
        AlertDescription::BadCertificate => "bad certificate".into(),
        AlertDescription::CertificateUnknown => "certificate refused".into(),
        AlertDescription::UnsupportedCertificate => {
            "unsupported certificate (wrong key usage or purpose)".into()
        }
        AlertDescription::AccessDenied => "access denied".into(),
        // What rustls says when a certificate's signature does not verify
        // under the CA trusted: a CA of the same name, but not the same CA.
        AlertDescription::DecryptError => {
            "its signature does not check out against the CA the other side trusts (a \
             certificate from another or an older PKI? `clusterlab-certs init --force` makes a \
             new CA of the same name)"
                .into()
        }
        other => format!("TLS alert {other:?}"),
    }
}

/// Whether `alert` says a certificate was refused, rather than that the
/// handshake failed for another reason.
pub fn is_about_a_certificate(alert: AlertDescription) -> bool {
    matches!(
        alert,
        AlertDescription::UnknownCA
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateRequired
            | AlertDescription::BadCertificate
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::AccessDenied
            | AlertDescription::DecryptError
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The side whose certificate was refused says it was its own; a
    /// certificate from another PKI of the same name is named as such.
    #[test]
    fn alerts_say_whose_certificate_was_refused_and_why() {
        let received = |alert| rustls::Error::AlertReceived(alert);
        assert_eq!(
            rejected_client(&received(AlertDescription::CertificateRevoked)),
            "the client refused our certificate: certificate revoked"
        );
        assert_eq!(
            rejected_client(&received(AlertDescription::HandshakeFailure)),
            "the client aborted the handshake: TLS alert HandshakeFailure"
        );
        assert_eq!(
            failed_connection(&received(AlertDescription::NoApplicationProtocol)),
            "the server aborted the handshake: TLS alert NoApplicationProtocol (the server's \
             log says more)"
        );
        assert_eq!(
            failed_connection(&received(AlertDescription::CertificateRevoked)),
            "the server rejected our certificate: certificate revoked (the server's log says \
             more)"
        );
        let other_pki = failed_connection(&received(AlertDescription::DecryptError));
        assert!(
            other_pki.starts_with(
                "the server rejected our certificate: its signature does not \
                 check out against the CA the other side trusts (a certificate from another or \
                 an older PKI?"
            ),
            "{other_pki}"
        );
    }

    /// An error that wraps another, as tonic's and hyper's errors do.
    #[derive(Debug)]
    struct Wrapped(&'static str, Box<dyn StdError + Send + Sync>);

    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl StdError for Wrapped {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&*self.1)
        }
    }

    /// Every `init` names its CA alike, so a certificate from another PKI
    /// (ca.pem copied out of compose before `down -v` made a new one) fails
    /// as a bad signature: said to be from different PKIs first, not
    /// tampered with alone.
    #[test]
    fn a_bad_signature_names_a_stale_pki_before_tampering() {
        let refused = rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature);
        let said = failed_connection(&refused);
        assert!(
            said.starts_with(
                "we refused the server's certificate: bad signature: it was signed \
                 by a different CA with the same name as ours, so the two sides' certificates \
                 come from different PKIs"
            ) && said.contains("docker compose down -v"),
            "{said}"
        );
    }

    #[test]
    fn a_hang_up_during_setup_is_told_from_nothing_listening() {
        use std::io::{Error, ErrorKind};
        let reset = Wrapped(
            "transport error",
            Box::new(Error::from(ErrorKind::ConnectionReset)),
        );
        assert!(closed_during_setup(&reset));
        // hyper's own words, with no io::Error beneath them.
        let closed = Wrapped("operation was canceled", "connection closed".into());
        assert!(closed_during_setup(&closed));
        let refused = Wrapped(
            "transport error",
            Box::new(Error::from(ErrorKind::ConnectionRefused)),
        );
        assert!(!closed_during_setup(&refused));
        let other = Wrapped("transport error", "dns error".into());
        assert!(!closed_during_setup(&other));
    }

    #[test]
    fn a_timeout_is_found_however_deep_and_whoever_raised_it() {
        use std::io::{Error, ErrorKind};
        let connect = Wrapped(
            "transport error",
            Box::new(Error::from(ErrorKind::TimedOut)),
        );
        assert!(timed_out(&connect));
        // hyper's keepalive: its own error types, no io::Error.
        let keepalive = Wrapped(
            "http2 error",
            Box::new(Wrapped(
                "keep-alive timed out",
                "operation timed out".into(),
            )),
        );
        assert!(timed_out(&keepalive));
        let refused = Wrapped(
            "transport error",
            Box::new(Error::from(ErrorKind::ConnectionRefused)),
        );
        assert!(!timed_out(&refused));
    }
}
