//! Test certificates made with rcgen: a cluster CA, the auth server's certificate and plugin
//! client certificates, shaped like the ones `tctl auth sign --format=tls` produces.

use rand::RngCore as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use teleport_mattermost::teleport::client::SERVER_NAME;
use teleport_mattermost::teleport::identity::{Identity, PemSource};
use time::{Duration, OffsetDateTime};

/// The cluster name the test CA issues for (what the Teleport double's Ping reports).
pub const CLUSTER_NAME: &str = "test-cluster";

/// A cluster CA. Make two to get certificates the other does not trust.
pub struct TestPki {
    issuer: Issuer<'static, KeyPair>,
    ca_pem: String,
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for TestPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestPki").finish_non_exhaustive()
    }
}

/// A client certificate, its key and the CA bundle, as `auth.crt`/`auth.key`/`auth.cas`.
#[derive(Debug, Clone)]
pub struct ClientCert {
    /// `auth.crt`.
    pub cert_pem: String,
    /// `auth.key` (PKCS#8 ECDSA P-256).
    pub key_pem: String,
    /// `auth.cas`.
    pub cas_pem: String,
    /// The certificate serial, lowercase hex, as the Teleport double records it.
    pub serial_hex: String,
}

impl ClientCert {
    /// The same identity in `tctl auth sign --format=file` layout: key, SSH cert line, TLS
    /// cert, `@cert-authority` line, TLS CAs.
    pub fn identity_file(&self) -> String {
        format!(
            "{}ecdsa-sha2-nistp256-cert-v01@openssh.com AAAAKGVjZHNhLXNoYTItbmlzdHAyNTYtY2VydC12MDFAb3BlbnNzaC5jb20= plugin\n{}@cert-authority *.test-cluster ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTY= type=host\n{}",
            self.key_pem, self.cert_pem, self.cas_pem
        )
    }

    /// Parsed with [`Identity::from_pems`].
    pub fn identity(&self) -> Identity {
        Identity::from_pems(
            PemSource::new("auth.crt", self.cert_pem.as_bytes()),
            PemSource::new("auth.key", self.key_pem.as_bytes()),
            PemSource::new("auth.cas", self.cas_pem.as_bytes()),
        )
        .expect("test PKI makes valid identities")
    }
}

/// A random positive serial whose DER encoding needs no padding byte, so the hex the server
/// reads back is exactly these bytes.
fn random_serial() -> (Vec<u8>, String) {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    bytes[0] = (bytes[0] & 0x7f) | 0x10;
    let hex = bytes.iter().map(|b| format!("{b:02x}")).collect();
    (bytes.to_vec(), hex)
}

impl TestPki {
    /// A fresh cluster CA (ECDSA P-256).
    pub fn new() -> Self {
        let key = KeyPair::generate().expect("generate CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params
            .distinguished_name
            .push(DnType::CommonName, CLUSTER_NAME);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "test-cluster");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(30);
        params.not_after = now + Duration::days(3650);
        params.serial_number = Some(random_serial().0.into());
        let cert = params.self_signed(&key).expect("self-sign CA");
        Self {
            ca_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// The CA certificate, PEM (what `auth.cas` holds).
    pub fn ca_pem(&self) -> String {
        self.ca_pem.clone()
    }

    /// The auth server's certificate and key: SANs `teleport.cluster.local`, `localhost`,
    /// `127.0.0.1`.
    pub fn server_cert(&self) -> (String, String) {
        let key = KeyPair::generate().expect("generate server key");
        let mut params =
            CertificateParams::new(vec![SERVER_NAME.to_owned(), "localhost".to_owned()])
                .expect("server params");
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        params
            .distinguished_name
            .push(DnType::CommonName, "auth-server");
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(365);
        params.serial_number = Some(random_serial().0.into());
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("sign server cert");
        (cert.pem(), key.serialize_pem())
    }

    /// A plugin client certificate for `user`, valid from an hour ago for 24 hours.
    pub fn client(&self, user: &str) -> ClientCert {
        let now = OffsetDateTime::now_utc();
        self.client_valid(user, now - Duration::hours(1), now + Duration::hours(24))
    }

    /// A client certificate with explicit validity, for expired / not-yet-valid cases.
    pub fn client_valid(
        &self,
        user: &str,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> ClientCert {
        let key = KeyPair::generate().expect("generate client key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("client params");
        params.distinguished_name.push(DnType::CommonName, user);
        // Teleport puts the user's roles in O; plugins usually run as role access-plugin.
        params
            .distinguished_name
            .push(DnType::OrganizationName, "access-plugin");
        // As Teleport's certificates do: the cluster's name in a subject attribute
        // (OID 1.3.9999.1.7), which TLS routing through a Proxy relies on.
        params
            .distinguished_name
            .push(DnType::CustomDnType(vec![1, 3, 9999, 1, 7]), CLUSTER_NAME);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.not_before = not_before;
        params.not_after = not_after;
        let (serial, serial_hex) = random_serial();
        params.serial_number = Some(serial.into());
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("sign client cert");
        ClientCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cas_pem: self.ca_pem.clone(),
            serial_hex,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_identity_carries_the_recorded_serial() {
        let pki = TestPki::new();
        let a = pki.client("plugin");
        let b = pki.client("plugin");
        assert_ne!(a.serial_hex, b.serial_hex);
        assert_eq!(a.identity().serial_hex, a.serial_hex);
        let from_file =
            Identity::from_identity_file(PemSource::new("identity", a.identity_file().as_bytes()))
                .unwrap();
        assert_eq!(from_file.fingerprint(), a.identity().fingerprint());
    }
}
