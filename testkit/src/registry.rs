//! An OCI registry and the clients a release uses against one: skopeo pushes an image, `helm
//! push` a chart (see [`Node::helm`](crate::node::Node::helm)), cosign signs and verifies
//! both.
//!
//! The registry is the node tier's (Debian's docker-registry, the CNCF distribution registry,
//! started by `tests/node/up.sh` on the node namespace's loopback, plain HTTP), so containerd
//! pulls from it as a cluster pulls from GHCR. cosign comes from `tests/registry/build.sh`.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use crate::node::{Output, run_output};

/// A registry reached at `addr` (`host:port`) over plain HTTP.
#[derive(Debug, Clone)]
pub struct Registry {
    /// `host:port`, as image references and `oci://` URLs name it.
    pub addr: String,
}

impl Registry {
    /// The node's registry, from `TM_NODE_REGISTRY` (tests/node/exec.sh sets it).
    pub fn from_env() -> Option<Registry> {
        let addr = std::env::var("TM_NODE_REGISTRY").ok()?;
        (!addr.is_empty()).then_some(Registry { addr })
    }

    /// `<addr>/<repository>:<tag>`.
    pub fn reference(&self, repository: &str, tag: &str) -> String {
        format!("{}/{repository}:{tag}", self.addr)
    }

    /// `<addr>/<repository>@<digest>`.
    pub fn by_digest(&self, repository: &str, digest: &str) -> String {
        format!("{}/{repository}@{digest}", self.addr)
    }

    /// Pushes an OCI image archive (an OCI layout in a tar, as `tests/node/mkimage.py` writes)
    /// as `repository:tag` with skopeo; returns the manifest digest the registry stored.
    pub async fn push_archive(
        &self,
        archive: &Path,
        repository: &str,
        tag: &str,
    ) -> anyhow::Result<String> {
        let dir = tempfile::tempdir()?;
        let digest_file = dir.path().join("digest");
        let out = run_output(
            tokio::process::Command::new("skopeo")
                .arg("copy")
                // Plain HTTP: the registry is on the node's loopback.
                .arg("--dest-tls-verify=false")
                .arg("--digestfile")
                .arg(&digest_file)
                .arg(format!("oci-archive:{}", archive.display()))
                .arg(format!("docker://{}", self.reference(repository, tag))),
            None,
        )
        .await;
        if !out.success {
            bail!(
                "skopeo copy {} -> {}: {}{}",
                archive.display(),
                self.reference(repository, tag),
                out.stdout,
                out.stderr
            );
        }
        let digest = std::fs::read_to_string(&digest_file)?.trim().to_string();
        anyhow::ensure!(digest.starts_with("sha256:"), "skopeo wrote {digest:?}");
        Ok(digest)
    }

    /// The digest `repository:tag` resolves to now (what a client pulling the tag gets).
    pub async fn resolve(&self, repository: &str, tag: &str) -> anyhow::Result<String> {
        let url = format!("http://{}/v2/{repository}/manifests/{tag}", self.addr);
        let response = reqwest::Client::new()
            .head(&url)
            .header(
                reqwest::header::ACCEPT,
                "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json",
            )
            .send()
            .await?
            .error_for_status()?;
        response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .with_context(|| format!("HEAD {url}: no Docker-Content-Digest"))
    }
}

/// cosign with a throwaway key pair, as a publisher signs with a key (the release signs
/// keylessly, which needs GitHub's OIDC token and Sigstore's public services).
#[derive(Debug)]
pub struct Cosign {
    bin: PathBuf,
    dir: tempfile::TempDir,
    password: String,
}

impl Cosign {
    /// `cosign generate-key-pair` into a temporary directory.
    pub async fn with_new_key(bin: PathBuf) -> anyhow::Result<Cosign> {
        let dir = tempfile::tempdir()?;
        // A Sigstore trusted root that trusts nothing: `cosign verify` otherwise fetches the
        // public one (TUF, over the internet) even when it checks a key and ignores the tlog.
        std::fs::write(
            dir.path().join("trusted-root.json"),
            r#"{"mediaType":"application/vnd.dev.sigstore.trustedroot+json;version=0.1"}"#,
        )?;
        let cosign = Cosign {
            bin,
            password: format!("tm-{}", std::process::id()),
            dir,
        };
        let out = cosign.run(&["generate-key-pair"]).await;
        anyhow::ensure!(
            out.success && cosign.public_key().exists(),
            "cosign generate-key-pair: {}{}",
            out.stdout,
            out.stderr
        );
        Ok(cosign)
    }

    /// The public key users would verify with.
    pub fn public_key(&self) -> PathBuf {
        self.dir.path().join("cosign.pub")
    }

    async fn run(&self, args: &[&str]) -> Output {
        run_output(
            tokio::process::Command::new(&self.bin)
                .args(args)
                .current_dir(self.dir.path())
                .env("COSIGN_PASSWORD", &self.password)
                // Its TUF cache, if it ever made one, stays in the temporary directory.
                .env("TUF_ROOT", self.dir.path().join("tuf"))
                .env("HOME", self.dir.path())
                .kill_on_drop(true),
            None,
        )
        .await
    }

    /// Signs `reference` (best by digest) with the key; the signature goes to the registry
    /// beside it. No transparency log: it is a public service.
    pub async fn sign(&self, reference: &str) -> anyhow::Result<()> {
        let out = self
            .run(&[
                "sign",
                "--yes",
                "--key",
                "cosign.key",
                "--tlog-upload=false",
                "--allow-insecure-registry",
                "--allow-http-registry",
                reference,
            ])
            .await;
        anyhow::ensure!(
            out.success,
            "cosign sign {reference}: {}{}",
            out.stdout,
            out.stderr
        );
        Ok(())
    }

    /// `cosign verify --key` of `reference`, ignoring the transparency log; the output whatever
    /// the outcome (stdout is the verified claims as JSON).
    pub async fn verify(&self, reference: &str) -> Output {
        self.run(&[
            "verify",
            "--key",
            "cosign.pub",
            "--insecure-ignore-tlog",
            "--trusted-root",
            "trusted-root.json",
            "--allow-insecure-registry",
            "--allow-http-registry",
            reference,
        ])
        .await
    }
}

/// The manifest digests a passing `cosign verify` vouched for (its JSON claims).
pub fn verified_digests(stdout: &str) -> Vec<String> {
    serde_json::from_str::<serde_json::Value>(stdout.trim())
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|c| {
            c["critical"]["image"]["docker-manifest-digest"]
                .as_str()
                .map(str::to_string)
        })
        .collect()
}
