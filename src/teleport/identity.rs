//! The plugin's Teleport identity: certificate, key and cluster CAs from PEM.
//!
//! Teleport hands a plugin its identity in one of two shapes: `tctl auth sign --format=tls`
//! writes `auth.crt`, `auth.key` and `auth.cas`; `--format=file` writes one file holding the
//! key, an SSH certificate line, the TLS certificate, `@cert-authority` lines and the TLS CAs.
//! Both are parsed into an [`Identity`], which is validated up front (the key belongs to the
//! certificate, there is at least one CA) so a bad Secret is reported before any dial.

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

/// PEM bytes plus a label naming where they came from.
///
/// The label is what errors show: a file path, or e.g.
/// `Secret teleport/mm-identity key auth.crt`.
#[derive(Debug, Clone, Copy)]
pub struct PemSource<'a> {
    /// Where the bytes came from, for error messages.
    pub label: &'a str,
    /// The PEM text.
    pub bytes: &'a [u8],
}

impl<'a> PemSource<'a> {
    /// Convenience constructor.
    pub fn new(label: &'a str, bytes: &'a [u8]) -> Self {
        Self { label, bytes }
    }
}

/// What the admin has to do to get a fresh identity; appended to time-related errors.
const RESIGN_HINT: &str = "re-run `tctl auth sign --format=tls --user=<plugin user> --out=auth --ttl=<ttl>` \
     and update the Secret (or the auth.crt/auth.key/auth.cas files)";

/// Why an identity could not be loaded or used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The bytes are not well-formed PEM.
    #[error(
        "{label}: not readable as PEM ({detail}); expected the output of `tctl auth sign --format=tls`"
    )]
    UnreadablePem {
        /// Where the bytes came from.
        label: String,
        /// The parser's complaint.
        detail: String,
    },
    /// No `CERTIFICATE` block where the client certificate should be.
    #[error(
        "{label}: no CERTIFICATE block found; it should hold the plugin's TLS certificate (auth.crt from `tctl auth sign --format=tls`)"
    )]
    NoCertificate {
        /// Where the bytes came from.
        label: String,
    },
    /// No private key block.
    #[error(
        "{label}: no private key found (expected RSA PRIVATE KEY, EC PRIVATE KEY or PRIVATE KEY); it should hold auth.key from `tctl auth sign --format=tls`"
    )]
    NoPrivateKey {
        /// Where the bytes came from.
        label: String,
    },
    /// No CA certificate to verify the auth server with.
    #[error(
        "{label}: no CA certificate found; it should hold the cluster's host CA (auth.cas from `tctl auth sign --format=tls`)"
    )]
    NoCaCertificate {
        /// Where the bytes came from.
        label: String,
    },
    /// A certificate block that is not a parsable X.509 certificate.
    #[error(
        "{label}: the certificate cannot be parsed ({detail}); regenerate it with `tctl auth sign --format=tls`"
    )]
    BadCertificate {
        /// Where the bytes came from.
        label: String,
        /// The parser's complaint.
        detail: String,
    },
    /// A key of a type the TLS stack cannot sign with.
    #[error(
        "{label}: the private key is not usable ({detail}); tctl writes RSA or ECDSA keys, regenerate it with `tctl auth sign --format=tls`"
    )]
    UnsupportedKey {
        /// Where the bytes came from.
        label: String,
        /// The TLS stack's complaint.
        detail: String,
    },
    /// The private key does not belong to the certificate.
    #[error(
        "{key_label} does not belong to the certificate in {cert_label}: the key and certificate come from different `tctl auth sign` runs; update both together"
    )]
    KeyMismatch {
        /// Where the certificate came from.
        cert_label: String,
        /// Where the key came from.
        key_label: String,
    },
    /// The certificate's notAfter has passed.
    #[error("{label}: the certificate expired at {not_after}; {RESIGN_HINT}")]
    Expired {
        /// Where the certificate came from.
        label: String,
        /// notAfter, RFC 3339.
        not_after: String,
    },
    /// The certificate's notBefore is still in the future.
    #[error(
        "{label}: the certificate is not valid before {not_before}; check this machine's clock, or {RESIGN_HINT}"
    )]
    NotYetValid {
        /// Where the certificate came from.
        label: String,
        /// notBefore, RFC 3339.
        not_before: String,
    },
}

/// The PEM material the TLS stack consumes, kept together and shared between clones.
struct Material {
    key_pem: String,
    cas_pem: String,
    cert_der: CertificateDer<'static>,
    cert_label: String,
}

/// A validated Teleport client identity: TLS certificate, its private key and the cluster CAs.
#[derive(Clone)]
pub struct Identity {
    material: Arc<Material>,
    /// Start of the certificate's validity.
    pub not_before: DateTime<Utc>,
    /// End of the certificate's validity.
    pub not_after: DateTime<Utc>,
    /// The certificate serial, lowercase hex without separators.
    pub serial_hex: String,
    /// The certificate subject as a distinguished name (`CN=…, O=…`).
    pub subject: String,
}

impl fmt::Debug for Identity {
    // Hand-written so the private key never lands in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("source", &self.material.cert_label)
            .field("subject", &self.subject)
            .field("serial_hex", &self.serial_hex)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Loads the `--format=tls` triple: `auth.crt`, `auth.key`, `auth.cas`.
    ///
    /// Validity in time is not checked here; call [`Identity::check_time`].
    pub fn from_pems(
        cert: PemSource<'_>,
        key: PemSource<'_>,
        cas: PemSource<'_>,
    ) -> Result<Identity, IdentityError> {
        let certs = read_certs(cert)?;
        let leaf = certs
            .into_iter()
            .next()
            .ok_or_else(|| IdentityError::NoCertificate {
                label: cert.label.to_owned(),
            })?;
        let private_key = read_key(key)?;
        let ca_certs = read_certs(cas)?;
        if ca_certs.is_empty() {
            return Err(IdentityError::NoCaCertificate {
                label: cas.label.to_owned(),
            });
        }
        Self::build(
            leaf,
            cert.label,
            private_key,
            key.label,
            ca_certs,
            cas.label,
        )
    }

    /// Loads a `--format=file` identity file: key, SSH cert line, TLS cert, `@cert-authority`
    /// lines, TLS CA certs. The first CERTIFICATE block is the client certificate and every
    /// later one is a CA; the SSH lines are not PEM and are skipped.
    pub fn from_identity_file(file: PemSource<'_>) -> Result<Identity, IdentityError> {
        let mut certs = read_certs(file)?.into_iter();
        let leaf = certs.next().ok_or_else(|| IdentityError::NoCertificate {
            label: file.label.to_owned(),
        })?;
        let ca_certs: Vec<_> = certs.collect();
        if ca_certs.is_empty() {
            return Err(IdentityError::NoCaCertificate {
                label: file.label.to_owned(),
            });
        }
        let private_key = read_key(file)?;
        Self::build(
            leaf,
            file.label,
            private_key,
            file.label,
            ca_certs,
            file.label,
        )
    }

    fn build(
        leaf: CertificateDer<'static>,
        cert_label: &str,
        key: PrivateKeyDer<'static>,
        key_label: &str,
        ca_certs: Vec<CertificateDer<'static>>,
        cas_label: &str,
    ) -> Result<Identity, IdentityError> {
        let (not_before, not_after, serial_hex, subject) = describe(&leaf, cert_label)?;
        for ca in &ca_certs {
            // Parse each CA now so a truncated auth.cas is reported by name, not as a
            // handshake failure later.
            describe(ca, cas_label)?;
        }
        check_key_matches(&leaf, &key, cert_label, key_label)?;

        let material = Material {
            key_pem: key_to_pem(&key),
            cas_pem: ca_certs
                .iter()
                .map(|c| to_pem("CERTIFICATE", c.as_ref()))
                .collect(),
            cert_der: leaf,
            cert_label: cert_label.to_owned(),
        };
        Ok(Identity {
            material: Arc::new(material),
            not_before,
            not_after,
            serial_hex,
            subject,
        })
    }

    /// Fails when `now` is outside the certificate's validity window.
    pub fn check_time(&self, now: DateTime<Utc>) -> Result<(), IdentityError> {
        if now > self.not_after {
            return Err(IdentityError::Expired {
                label: self.material.cert_label.clone(),
                not_after: rfc3339(self.not_after),
            });
        }
        if now < self.not_before {
            return Err(IdentityError::NotYetValid {
                label: self.material.cert_label.clone(),
                not_before: rfc3339(self.not_before),
            });
        }
        Ok(())
    }

    /// SHA-256 of the certificate DER, lowercase hex: tells two identities apart.
    pub fn fingerprint(&self) -> String {
        hex::encode(Sha256::digest(self.material.cert_der.as_ref()))
    }

    /// Where the certificate came from (the label it was loaded with).
    pub fn source(&self) -> &str {
        &self.material.cert_label
    }

    /// The Teleport cluster the certificate was issued by (its subject's cluster attribute):
    /// what TLS routing through a Proxy asks for.
    pub fn cluster_name(&self) -> Option<String> {
        cluster_name_of(self.material.cert_der.as_ref())
    }

    /// The client certificate, DER.
    pub(crate) fn cert_der(&self) -> &CertificateDer<'static> {
        &self.material.cert_der
    }

    /// The private key, PEM (in the encoding it was given in).
    pub(crate) fn key_pem(&self) -> &str {
        &self.material.key_pem
    }

    /// The cluster CA certificates, PEM, concatenated.
    pub(crate) fn cas_pem(&self) -> &str {
        &self.material.cas_pem
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn unreadable(label: &str, err: pem::Error) -> IdentityError {
    IdentityError::UnreadablePem {
        label: label.to_owned(),
        detail: err.to_string(),
    }
}

/// Every CERTIFICATE block in `src`, in order.
fn read_certs(src: PemSource<'_>) -> Result<Vec<CertificateDer<'static>>, IdentityError> {
    CertificateDer::pem_slice_iter(src.bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| unreadable(src.label, e))
}

/// The first private key block in `src`: PKCS#1, SEC1 or PKCS#8.
fn read_key(src: PemSource<'_>) -> Result<PrivateKeyDer<'static>, IdentityError> {
    match PrivateKeyDer::from_pem_slice(src.bytes) {
        Ok(key) => Ok(key),
        Err(pem::Error::NoItemsFound) => Err(IdentityError::NoPrivateKey {
            label: src.label.to_owned(),
        }),
        Err(e) => Err(unreadable(src.label, e)),
    }
}

/// Validity, serial and subject of a certificate.
/// The subject attribute Teleport puts its cluster's name in (`TeleportClusterASN1ExtensionOID`
/// in `lib/tlsca`).
const CLUSTER_NAME_OID: &str = "1.3.9999.1.7";

/// The Teleport cluster name in a certificate's subject, if it carries one.
fn cluster_name_of(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    cert.subject()
        .iter_attributes()
        .find(|a| a.attr_type().to_id_string() == CLUSTER_NAME_OID)
        .and_then(|a| a.as_str().ok())
        .map(str::to_string)
}

fn describe(
    der: &CertificateDer<'_>,
    label: &str,
) -> Result<(DateTime<Utc>, DateTime<Utc>, String, String), IdentityError> {
    let bad = |detail: String| IdentityError::BadCertificate {
        label: label.to_owned(),
        detail,
    };
    let (_, cert) =
        x509_parser::parse_x509_certificate(der.as_ref()).map_err(|e| bad(e.to_string()))?;
    let validity = cert.validity();
    let not_before = DateTime::from_timestamp(validity.not_before.timestamp(), 0)
        .ok_or_else(|| bad("notBefore out of range".into()))?;
    let not_after = DateTime::from_timestamp(validity.not_after.timestamp(), 0)
        .ok_or_else(|| bad("notAfter out of range".into()))?;
    Ok((
        not_before,
        not_after,
        hex::encode(cert.raw_serial()),
        cert.subject().to_string(),
    ))
}

/// Compares the certificate's public key with the private key's, via rustls.
fn check_key_matches(
    cert: &CertificateDer<'static>,
    key: &PrivateKeyDer<'static>,
    cert_label: &str,
    key_label: &str,
) -> Result<(), IdentityError> {
    let signing_key = rustls::crypto::ring::sign::any_supported_type(key).map_err(|e| {
        IdentityError::UnsupportedKey {
            label: key_label.to_owned(),
            detail: e.to_string(),
        }
    })?;
    match CertifiedKey::new(vec![cert.clone()], signing_key).keys_match() {
        Ok(()) => Ok(()),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(IdentityError::KeyMismatch {
                cert_label: cert_label.to_owned(),
                key_label: key_label.to_owned(),
            })
        }
        // ring's keys always expose their public half, so "unknown" cannot happen for the key
        // types tctl writes; anything else is a certificate rustls cannot parse.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(()),
        Err(e) => Err(IdentityError::BadCertificate {
            label: cert_label.to_owned(),
            detail: e.to_string(),
        }),
    }
}

/// PEM-encodes DER; tonic's TLS config takes PEM, and the identity-file layout mixes blocks.
fn to_pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 2 * label.len() + 40);
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

fn key_to_pem(key: &PrivateKeyDer<'_>) -> String {
    match key {
        PrivateKeyDer::Pkcs1(k) => to_pem("RSA PRIVATE KEY", k.secret_pkcs1_der()),
        PrivateKeyDer::Sec1(k) => to_pem("EC PRIVATE KEY", k.secret_sec1_der()),
        PrivateKeyDer::Pkcs8(k) => to_pem("PRIVATE KEY", k.secret_pkcs8_der()),
        // Non-exhaustive enum: no other variant exists today; PKCS#8 is the generic wrapper.
        other => to_pem("PRIVATE KEY", other.secret_der()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };

    const RSA_PKCS1: &str = include_str!("testdata/rsa_pkcs1.key.pem");
    const RSA_PKCS8: &str = include_str!("testdata/rsa_pkcs8.key.pem");
    const EC_SEC1: &str = include_str!("testdata/ec_sec1.key.pem");
    const EC_PKCS8: &str = include_str!("testdata/ec_pkcs8.key.pem");

    struct Made {
        cert: String,
        key: String,
        ca: String,
    }

    /// A CA plus a client cert signed by it. `key_pkcs8` picks the client key (fresh ECDSA when
    /// `None`); ring cannot generate RSA keys, hence the fixtures.
    fn make(key_pkcs8: Option<&str>, days: (i64, i64)) -> Made {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "test-cluster");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);

        let key = match key_pkcs8 {
            Some(pem) => KeyPair::from_pem(pem).unwrap(),
            None => KeyPair::generate().unwrap(),
        };
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "access-plugin");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        // rcgen takes `time` values; x509-parser re-exports a constructor, so no extra dependency.
        let at = |d: i64| {
            x509_parser::time::ASN1Time::from_timestamp(Utc::now().timestamp() + d * 86_400)
                .unwrap()
                .to_datetime()
        };
        params.not_before = at(days.0);
        params.not_after = at(days.1);
        params.serial_number = Some(vec![0x01, 0x23, 0xab].into());
        let cert = params.signed_by(&key, &issuer).unwrap();
        Made {
            cert: cert.pem(),
            key: key.serialize_pem(),
            ca: ca_cert.pem(),
        }
    }

    fn load(m: &Made, key: &str) -> Result<Identity, IdentityError> {
        Identity::from_pems(
            PemSource::new("auth.crt", m.cert.as_bytes()),
            PemSource::new("auth.key", key.as_bytes()),
            PemSource::new("auth.cas", m.ca.as_bytes()),
        )
    }

    #[test]
    fn loads_the_tls_triple_and_reads_serial_subject_and_validity() {
        let m = make(None, (-1, 1));
        let id = load(&m, &m.key).unwrap();
        assert_eq!(id.serial_hex, "0123ab");
        assert!(id.subject.contains("CN=access-plugin"), "{}", id.subject);
        assert!(id.not_before < Utc::now() && Utc::now() < id.not_after);
        assert_eq!(id.fingerprint().len(), 64);
        id.check_time(Utc::now()).unwrap();
    }

    #[test]
    fn accepts_rsa_pkcs1_and_pkcs8_keys() {
        let m = make(Some(RSA_PKCS8), (-1, 1));
        load(&m, RSA_PKCS1).unwrap();
        load(&m, RSA_PKCS8).unwrap();
    }

    #[test]
    fn accepts_ec_sec1_and_pkcs8_keys() {
        let m = make(Some(EC_PKCS8), (-1, 1));
        let id = load(&m, EC_SEC1).unwrap();
        assert!(id.key_pem().starts_with("-----BEGIN EC PRIVATE KEY-----"));
        load(&m, EC_PKCS8).unwrap();
    }

    #[test]
    fn key_from_another_sign_run_is_a_mismatch_naming_both_sources() {
        let m = make(None, (-1, 1));
        let other = make(None, (-1, 1));
        let err = load(&m, &other.key).unwrap_err();
        assert!(matches!(err, IdentityError::KeyMismatch { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("auth.key") && msg.contains("auth.crt"),
            "{msg}"
        );

        let rsa = make(Some(RSA_PKCS8), (-1, 1));
        let err = load(&rsa, EC_SEC1).unwrap_err();
        assert!(matches!(err, IdentityError::KeyMismatch { .. }), "{err:?}");
    }

    #[test]
    fn missing_pieces_are_named() {
        let m = make(None, (-1, 1));
        let no_cert = Identity::from_pems(
            PemSource::new("Secret teleport/mm key auth.crt", b"nothing here"),
            PemSource::new("auth.key", m.key.as_bytes()),
            PemSource::new("auth.cas", m.ca.as_bytes()),
        )
        .unwrap_err();
        assert!(matches!(no_cert, IdentityError::NoCertificate { .. }));
        assert!(
            no_cert
                .to_string()
                .starts_with("Secret teleport/mm key auth.crt:")
        );

        let no_key = load(&m, "").unwrap_err();
        assert!(matches!(no_key, IdentityError::NoPrivateKey { ref label } if label == "auth.key"));

        let no_ca = Identity::from_pems(
            PemSource::new("auth.crt", m.cert.as_bytes()),
            PemSource::new("auth.key", m.key.as_bytes()),
            PemSource::new("auth.cas", b""),
        )
        .unwrap_err();
        assert!(
            matches!(no_ca, IdentityError::NoCaCertificate { ref label } if label == "auth.cas")
        );
    }

    #[test]
    fn broken_pem_is_unreadable() {
        let m = make(None, (-1, 1));
        let truncated = &m.cert[..m.cert.len() - 30];
        let err = Identity::from_pems(
            PemSource::new("/etc/teleport/auth.crt", truncated.as_bytes()),
            PemSource::new("auth.key", m.key.as_bytes()),
            PemSource::new("auth.cas", m.ca.as_bytes()),
        )
        .unwrap_err();
        assert!(
            matches!(err, IdentityError::UnreadablePem { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("/etc/teleport/auth.crt"));
    }

    #[test]
    fn expired_certificate_reports_not_after_and_how_to_renew() {
        let m = make(None, (-3, -1));
        let id = load(&m, &m.key).unwrap();
        let err = id.check_time(Utc::now()).unwrap_err();
        let IdentityError::Expired { ref not_after, .. } = err else {
            panic!("{err:?}")
        };
        assert_eq!(not_after, &rfc3339(id.not_after));
        assert!(DateTime::parse_from_rfc3339(not_after).is_ok());
        let msg = err.to_string();
        assert!(msg.contains("tctl auth sign --format=tls"), "{msg}");
        assert!(msg.contains("auth.crt"), "{msg}");
    }

    #[test]
    fn not_yet_valid_certificate_reports_not_before() {
        let m = make(None, (1, 3));
        let id = load(&m, &m.key).unwrap();
        let err = id.check_time(Utc::now()).unwrap_err();
        assert!(
            matches!(err, IdentityError::NotYetValid { ref not_before, .. } if *not_before == rfc3339(id.not_before))
        );
        // ...and becomes valid once the clock catches up.
        id.check_time(id.not_before + Duration::minutes(1)).unwrap();
    }

    #[test]
    fn identity_file_layout_matches_the_triple() {
        let m = make(None, (-1, 1));
        let file = format!(
            "{}ssh-ecdsa-sha2-nistp256-cert-v01@openssh.com AAAAKGVjZHNh plugin\n{}@cert-authority *.cluster ecdsa-sha2-nistp256 AAAAE2Vj type=host\n{}",
            m.key, m.cert, m.ca
        );
        let from_file =
            Identity::from_identity_file(PemSource::new("identity", file.as_bytes())).unwrap();
        let from_triple = load(&m, &m.key).unwrap();
        assert_eq!(from_file.fingerprint(), from_triple.fingerprint());
        assert_eq!(from_file.cas_pem(), from_triple.cas_pem());
        assert_eq!(from_file.key_pem(), from_triple.key_pem());
    }

    #[test]
    fn identity_file_without_ca_is_rejected() {
        let m = make(None, (-1, 1));
        let file = format!("{}{}", m.key, m.cert);
        let err = Identity::from_identity_file(PemSource::new("/var/lib/id", file.as_bytes()))
            .unwrap_err();
        assert!(matches!(err, IdentityError::NoCaCertificate { .. }));
    }

    #[test]
    fn pem_round_trips_through_the_parser() {
        let m = make(None, (-1, 1));
        let id = load(&m, &m.key).unwrap();
        let again = Identity::from_pems(
            PemSource::new(
                "a",
                to_pem("CERTIFICATE", id.cert_der().as_ref()).as_bytes(),
            ),
            PemSource::new("b", id.key_pem().as_bytes()),
            PemSource::new("c", id.cas_pem().as_bytes()),
        )
        .unwrap();
        assert_eq!(again.fingerprint(), id.fingerprint());
    }
}
