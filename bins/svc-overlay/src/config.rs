//! Config layering: built-in defaults -> overlay.toml or --config FILE ->
//! `RON_OVERLAY_<SECTION>__<KEY>` (and the seed's RON_OVERLAY_HANDSHAKE_MS and
//! RON_OVERLAY_TX_WATERMARK) -> CLI flags. Later layers win; every value
//! remembers its layer for /configz.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use overlay_core::{ConfigError, OverlayConfig, Source, ValidConfig, flatten};

use crate::cli::ServeArgs;

/// The config file read from the working directory when --config is absent.
pub const DEFAULT_FILE: &str = "overlay.toml";
/// Prefix of the structured environment variables.
pub const ENV_PREFIX: &str = "RON_OVERLAY_";
/// The seed's flat variables, and the keys they set.
const LEGACY_ENV: [(&str, &str); 2] =
    [("RON_OVERLAY_HANDSHAKE_MS", "oap.handshake_timeout_ms"), ("RON_OVERLAY_TX_WATERMARK", "session.tx_watermark")];

/// Why the config could not be loaded. Each message names the key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// --config named a file that does not exist.
    #[error("config file {0} does not exist")]
    Missing(PathBuf),
    /// A `--set` flag without `=`.
    #[error("--set {0}: expected KEY=VALUE")]
    SetSyntax(String),
    /// A layer could not be parsed or a value has the wrong type.
    #[error("{0}")]
    Parse(String),
    /// A value is outside its range.
    #[error("{0}")]
    Invalid(#[from] ConfigError),
    /// A variable or `--set` value figment cannot parse without panicking.
    #[error(
        "{0}: a value with both a backslash and non-ASCII characters cannot be read from {1}; set it in the config file"
    )]
    Unreadable(String, &'static str),
}

/// Loads, layers and validates the config.
pub fn load(args: &ServeArgs) -> Result<ValidConfig, LoadError> {
    let figment = figment(args)?;
    let mut config: OverlayConfig = figment.extract().map_err(|e| LoadError::Parse(one_line(&e)))?;
    let mut sources = sources(&figment, &config);
    // A watermark nobody set follows the queue it belongs to: three
    // quarters of it, as the defaults' 96 of 128 (`--set session.tx_queue=2`
    // alone must not fail on a key the operator never set).
    let watermark = "session.tx_watermark".to_string();
    if sources.get(&watermark).is_none_or(|s| *s == Source::Default)
        && sources.get("session.tx_queue").is_some_and(|s| *s != Source::Default)
    {
        config.session.tx_watermark = (config.session.tx_queue * 3 / 4).max(1);
        sources.insert(watermark, Source::Default);
    }
    Ok(config.validate()?.with_sources(sources))
}

fn figment(args: &ServeArgs) -> Result<Figment, LoadError> {
    for (name, value) in std::env::vars_os() {
        if let (Some(name), Some(value)) = (name.to_str(), value.to_str())
            && name.len() >= ENV_PREFIX.len()
            && name[..ENV_PREFIX.len()].eq_ignore_ascii_case(ENV_PREFIX)
        {
            readable(name, value, "the environment")?;
        }
    }
    for kv in &args.set {
        if let Some((key, value)) = kv.split_once('=') {
            readable(key, value, "--set")?;
        }
    }
    let mut figment = Figment::from(Layer::new("built-in defaults", Serialized::defaults(OverlayConfig::default())));
    let file = match &args.config {
        Some(path) if !path.exists() => return Err(LoadError::Missing(path.clone())),
        Some(path) => Some(path.clone()),
        None => Path::new(DEFAULT_FILE).exists().then(|| PathBuf::from(DEFAULT_FILE)),
    };
    if let Some(path) = file {
        figment = figment.merge(Toml::file(path));
    }
    let legacy = Env::raw().filter_map(|key| {
        LEGACY_ENV.iter().find(|(var, _)| key.as_str().eq_ignore_ascii_case(var)).map(|(_, to)| (*to).into())
    });
    let structured = Env::prefixed(ENV_PREFIX)
        .filter(|key| !LEGACY_ENV.iter().any(|(var, _)| var[ENV_PREFIX.len()..].eq_ignore_ascii_case(key.as_str())))
        .split("__");
    figment = figment.merge(legacy).merge(structured);
    figment = figment.merge(Layer::new(CLI, cli_layer(args)?));
    Ok(figment)
}

/// figment 0.10 unescapes a quoted value by slicing it at a character
/// count as if it were a byte offset: a backslash after a multi-byte
/// character panics (found by the `config` fuzz target). Such a value is
/// refused before figment parses it; TOML files go through the toml crate.
fn readable(name: &str, value: &str, from: &'static str) -> Result<(), LoadError> {
    if value.contains('\\') && !value.is_ascii() {
        return Err(LoadError::Unreadable(name.to_string(), from));
    }
    Ok(())
}

/// The flags that were given, as a nested dict.
fn cli_layer(args: &ServeArgs) -> Result<Serialized<Dict>, LoadError> {
    let mut flat: Vec<(String, Value)> = Vec::new();
    if let Some(addr) = args.addr {
        flat.push(("transport.addr".into(), addr.to_string().into()));
    }
    if let Some(addr) = args.admin_addr {
        flat.push(("admin.addr".into(), addr.to_string().into()));
    }
    if let Some(name) = &args.name {
        flat.push(("transport.name".into(), name.clone().into()));
    }
    if let Some(n) = args.max_conns {
        flat.push(("transport.max_conns".into(), n.into()));
    }
    if let Some(peers) = &args.peers {
        flat.push(("peers".into(), peers.iter().map(ToString::to_string).collect::<Vec<_>>().into()));
    }
    for kv in &args.set {
        let (key, value) = kv.split_once('=').ok_or_else(|| LoadError::SetSyntax(kv.clone()))?;
        let value: Value = value.parse().unwrap_or_else(|_| Value::from(value.to_string()));
        flat.push((key.trim().to_string(), value));
    }
    let mut dict = Dict::new();
    for (key, value) in flat {
        insert(&mut dict, &key, value);
    }
    Ok(Serialized::defaults(dict))
}

fn insert(dict: &mut Dict, dotted: &str, value: Value) {
    match dotted.split_once('.') {
        None => {
            dict.insert(dotted.to_string(), value);
        }
        Some((head, rest)) => {
            let entry = dict.entry(head.to_string()).or_insert_with(|| Value::from(Dict::new()));
            if let Value::Dict(_, inner) = entry {
                insert(inner, rest, value);
            }
        }
    }
}

/// Which layer each dotted key's value came from.
fn sources(figment: &Figment, config: &OverlayConfig) -> BTreeMap<String, Source> {
    let mut out = BTreeMap::new();
    if let Ok(tree) = serde_json::to_value(config) {
        flatten("", &tree, &mut |key, _| {
            let source = match figment.find_metadata(&key).map(|m| m.name.as_ref()) {
                Some(CLI) => Source::Cli,
                Some(name) if name.contains("environment") => Source::Env,
                Some(name) if name.contains("TOML") => Source::File,
                _ => Source::Default,
            };
            out.insert(key, source);
        });
    }
    out
}

/// `key: what is wrong (in which layer)` for the first error, on one line.
fn one_line(e: &figment::Error) -> String {
    let Some(first) = e.clone().into_iter().next() else { return e.to_string().replace('\n', " ") };
    let key = first.path.iter().map(|k| k.to_lowercase()).collect::<Vec<_>>().join(".");
    // The file a value came from is worth naming; where in this program a
    // layer was made (figment's `Source::Code`) is not.
    let place = match &first.metadata {
        Some(m) => match &m.source {
            Some(source @ figment::Source::File(_)) => format!(" (in {} {source})", m.name),
            _ => format!(" (in {})", m.name),
        },
        None => String::new(),
    };
    // figment quotes an "expected" list as a whole and each name in it:
    // "expected `one of `a`, `b``"; one quoting is enough.
    let kind = first.kind.to_string().replace("expected `one of ", "expected one of ").replace("``", "`");
    let text = if key.is_empty() { format!("{kind}{place}") } else { format!("{key}: {kind}{place}") };
    text.replace('\n', " ")
}

/// Metadata name of the CLI layer.
const CLI: &str = "command-line flags";

/// A provider under another name, so `find_metadata` tells the
/// serialized layers (defaults, flags) apart.
struct Layer<P> {
    name: &'static str,
    inner: P,
}

impl<P> Layer<P> {
    fn new(name: &'static str, inner: P) -> Layer<P> {
        Layer { name, inner }
    }
}

impl<P: Provider> Provider for Layer<P> {
    fn metadata(&self) -> Metadata {
        let mut metadata = self.inner.metadata();
        metadata.name = self.name.into();
        metadata
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        self.inner.data()
    }

    fn profile(&self) -> Option<Profile> {
        self.inner.profile()
    }
}
