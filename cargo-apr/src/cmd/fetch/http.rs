//! `https://` (and plain `http://`, for a local mirror) sources, and the one
//! HTTP stack every download uses: reqwest over rustls, driven by a small tokio
//! runtime. Downloads trust the bundled Mozilla roots plus, for a mirror or
//! proxy with its own certificate authority, the PEM certificates of
//! `$APR_CA_BUNDLE` (or else `$SSL_CERT_FILE`).

use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use apr_engine::testing::manifest::DeclaredModel;
use indicatif::{ProgressBar, ProgressStyle};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use super::{finish, work_dir};

/// Downloads `url` beside the model's place, checks it and moves it in.
pub(super) fn fetch(model: &DeclaredModel, url: &str) -> anyhow::Result<PathBuf> {
    block_on(download(model, url))?
}

/// Runs a download on a single-threaded runtime: fetching is one file at a time.
pub(super) fn block_on<F: Future>(future: F) -> anyhow::Result<F::Output> {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the download runtime")?;
    Ok(runtime.block_on(future))
}

async fn download(model: &DeclaredModel, url: &str) -> anyhow::Result<PathBuf> {
    let mut response = client()?
        .get(url)
        .send()
        .await
        .map_err(|e| anyhow::Error::new(e).context(format!("could not reach {url} (offline?)")))?;
    let status = response.status();
    if !status.is_success() {
        bail!("{url}: the server answered HTTP {}", status.as_u16());
    }
    let bar = progress_bar(&model.name, response.content_length());
    let work = work_dir(model)?;
    let joined = work.path().join("download");
    let mut out = std::fs::File::create(&joined)?;
    while let Some(piece) = response.chunk().await.with_context(|| format!("downloading {url} (connection lost?)"))? {
        out.write_all(&piece)?;
        bar.inc(piece.len() as u64);
    }
    bar.finish_and_clear();
    drop(out);
    finish(model, &joined)
}

fn progress_bar(name: &str, length: Option<u64>) -> ProgressBar {
    let bar = match length {
        Some(n) => ProgressBar::new(n).with_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
                .unwrap()
                .progress_chars("=> "),
        ),
        None => ProgressBar::new_spinner(),
    };
    bar.set_message(name.to_string());
    bar
}

/// The HTTP client: the bundled Mozilla roots, plus the certificates of
/// `$APR_CA_BUNDLE` (else `$SSL_CERT_FILE`) when one is set.
fn client() -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder();
    let bundle = ["APR_CA_BUNDLE", "SSL_CERT_FILE"]
        .into_iter()
        .find_map(|var| std::env::var_os(var).filter(|v| !v.is_empty()).map(|path| (var, PathBuf::from(path))));
    if let Some((var, path)) = bundle {
        for certificate in extra_certificates(&path).with_context(|| format!("{var}={}", path.display()))? {
            let certificate = reqwest::Certificate::from_der(certificate.as_ref())
                .with_context(|| format!("{var}={}: a certificate is not usable", path.display()))?;
            builder = builder.add_root_certificate(certificate);
        }
    }
    builder.build().context("setting up the HTTP client")
}

/// The CA certificates of a PEM file (other PEM sections, such as keys, are
/// passed over); a file with none that rustls can use as a trust anchor is refused.
fn extra_certificates(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|e| anyhow::anyhow!("cannot read the CA bundle: {e}"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("not a PEM certificate bundle: {e}"))?;
    if certificates.is_empty() {
        bail!("no PEM certificate (-----BEGIN CERTIFICATE-----) in the file");
    }
    let (usable, _unusable) = rustls::RootCertStore::empty().add_parsable_certificates(certificates.iter().cloned());
    if usable == 0 {
        bail!("no usable CA certificate in the file");
    }
    Ok(certificates)
}
