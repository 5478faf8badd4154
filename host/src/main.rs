//! The `courier` command: run a host, put messages into one, deploy plugins to one, inspect
//! a plugin.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::{Args, Parser, Subcommand};
use courier_host::admin::{self, AdminState};
use courier_host::config::{BrokerUrl, LogFormat, redact_url};
use courier_host::errors::{self, ListOptions, MoveOptions, Selection};
use courier_host::inbox::InboxStore;
use courier_host::inspect::inspect;
use courier_host::publish::read_seed_file;
use courier_host::{CourierEngine, Host, HostConfig, PublishRequest};

/// The most of an admin API answer the CLI reads (an embedded error queue's listing carries its
/// messages' bodies).
const ANSWER_LIMIT: u64 = 64 << 20;

#[derive(Debug, Parser)]
#[command(
    name = "courier",
    version,
    about = "A WebAssembly plugin host for message handlers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a host: load the plugins and handle messages until stopped.
    Run(RunArgs),
    /// Publish an event to a running host (through its admin API).
    Publish(PublishArgs),
    /// Send a command to one endpoint of a running host (through its admin API).
    Send(SendArgs),
    /// Show what a component is: world, version, subscriptions, imports, exports.
    Inspect {
        /// The `.wasm` file.
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Look at, replay or purge the messages in error queues (RabbitMQ).
    Errors(ErrorsArgs),
    /// List the plugins of a running host: version, digest, when loaded, messages handled.
    Plugins {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminClientArgs,
    },
    /// Deploy a plugin to a running host: a new plugin, or a new version swapped in without
    /// losing a message.
    Deploy {
        /// The component (`.wasm`).
        file: PathBuf,
        /// Refuse the file unless it is this plugin (by default: whatever it describes itself as).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        admin: AdminClientArgs,
    },
    /// Put a plugin of a running host back to its previous version.
    Rollback {
        /// The plugin's name.
        name: String,
        #[command(flatten)]
        admin: AdminClientArgs,
    },
    /// Remove a plugin from a running host: drained, unbound, its file deleted. Its queue
    /// keeps the messages it holds.
    Remove {
        /// The plugin's name.
        name: String,
        #[command(flatten)]
        admin: AdminClientArgs,
    },
    /// Create a plugin project that builds and has a passing test: NAME/, with the SDK of its
    /// language and the WIT contract in NAME/sdk/.
    New {
        /// The plugin's name: a-z, 0-9 and `-`, starting with a letter.
        name: String,
        /// The language.
        #[arg(long)]
        lang: courier_host::scaffold::Language,
        /// Where to create the project's directory (NAME/ inside it).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Work on components.
    #[command(subcommand)]
    Component(ComponentCommand),
}

#[derive(Debug, Subcommand)]
enum ComponentCommand {
    /// Make a core WebAssembly module that implements the Courier contract (what clang makes of
    /// a C plugin) a component: the contract embedded, WASI preview 1 adapted to WASI 0.2.
    New {
        /// The core module (`.wasm`).
        module: PathBuf,
        /// Where to write the component.
        #[arg(long, short)]
        output: PathBuf,
    },
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Configuration file (TOML).
    #[arg(long, short, env = "COURIER_CONFIG")]
    config: Option<PathBuf>,
    /// Broker URL: memory:// (embedded, the default) or amqp://user:password@host:port/vhost.
    #[arg(long, env = "COURIER_BROKER", hide_env_values = true)]
    broker: Option<String>,
    /// Directory of plugins (`.wasm`, with optional sidecar `.toml`).
    #[arg(long, env = "COURIER_PLUGINS")]
    plugins: Option<PathBuf>,
    /// Messages to put in once the plugins are loaded: a file of JSON lines.
    #[arg(long)]
    seed: Option<PathBuf>,
    /// Stop once every message has been handled, and print a summary.
    #[arg(long)]
    exit_when_idle: bool,
    /// Write the run's counters as JSON to this file when the host stops.
    #[arg(long)]
    summary: Option<PathBuf>,
    /// Address of the admin API (overrides `admin.listen`).
    #[arg(long, env = "COURIER_ADMIN_LISTEN")]
    admin_listen: Option<SocketAddr>,
    /// Bearer token for the admin API (overrides `admin.token`).
    #[arg(long, env = "COURIER_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Do not serve the admin API.
    #[arg(long)]
    no_admin: bool,
    /// Log format (overrides `log.format`).
    #[arg(long, env = "COURIER_LOG_FORMAT")]
    log_format: Option<LogFormat>,
    /// Directory of the host's own state, the inbox file (overrides `inbox.data_dir`). Hosts
    /// running side by side need one each.
    #[arg(long, env = "COURIER_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// PostgreSQL URL of the shared inbox (overrides `inbox.postgres_url`; taken only with
    /// `inbox.store = "postgres"`). An environment variable keeps its password out of files.
    #[arg(long, env = "COURIER_INBOX_POSTGRES_URL", hide_env_values = true)]
    inbox_postgres_url: Option<String>,
    /// Directory of compiled plugins (overrides `engine.cache_dir`).
    #[arg(long, env = "COURIER_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Do not watch the plugins directory (overrides `reload.watch`).
    #[arg(long)]
    no_watch: bool,
    /// Export spans over OTLP/HTTP to this base URL, e.g. `http://otel-collector:4318`
    /// (overrides `telemetry.otlp_endpoint`).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
}

#[derive(Debug, Args)]
struct AdminClientArgs {
    /// The admin API of the running host.
    #[arg(
        long,
        env = "COURIER_ADMIN_URL",
        default_value = "http://127.0.0.1:7411"
    )]
    admin: String,
    /// Bearer token for the admin API.
    #[arg(long, env = "COURIER_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(Debug, Args)]
struct MessageArgs {
    /// Message type URN, e.g. urn:message:Orders:OrderPlaced.
    message_type: String,
    /// Body as JSON; encoded to the content type.
    body: String,
    /// Body encoding on the wire.
    #[arg(long, value_parser = ["application/msgpack", "application/json"], default_value = "application/msgpack")]
    content_type: String,
    #[arg(long)]
    correlation_id: Option<String>,
    #[arg(long)]
    session_id: Option<String>,
    #[arg(long)]
    reply_to: Option<String>,
    /// The message expires this many milliseconds after it is sent.
    #[arg(long)]
    ttl_ms: Option<u64>,
    #[command(flatten)]
    admin: AdminClientArgs,
}

#[derive(Debug, Args)]
struct PublishArgs {
    #[command(flatten)]
    message: MessageArgs,
}

#[derive(Debug, Args)]
struct SendArgs {
    /// The endpoint (queue) to send to.
    destination: String,
    #[command(flatten)]
    message: MessageArgs,
}

#[derive(Debug, Args)]
struct ErrorsArgs {
    #[command(subcommand)]
    command: ErrorsCommand,
    /// Configuration file (TOML) whose `broker` is the RabbitMQ to use.
    #[arg(long, short, env = "COURIER_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Broker URL, amqp://user:password@host:port/vhost (overrides `broker`). Without one, the
    /// commands work on the embedded broker of the host at --admin.
    #[arg(long, env = "COURIER_BROKER", hide_env_values = true, global = true)]
    broker: Option<String>,
    /// The shared inbox's URL, read as `courier run` reads it so that the host's own
    /// configuration file and environment are accepted here unchanged; these commands do not
    /// use the inbox.
    #[arg(
        long,
        env = "COURIER_INBOX_POSTGRES_URL",
        hide_env_values = true,
        global = true
    )]
    inbox_postgres_url: Option<String>,
    /// With the embedded broker: the admin API of the host that runs it.
    #[arg(
        long,
        env = "COURIER_ADMIN_URL",
        default_value = "http://127.0.0.1:7411",
        global = true
    )]
    admin: String,
    /// Bearer token for that admin API.
    #[arg(
        long,
        env = "COURIER_ADMIN_TOKEN",
        hide_env_values = true,
        global = true
    )]
    token: Option<String>,
    /// Look at no more than this many messages of a queue; each is held unacknowledged until
    /// the command ends.
    #[arg(long, global = true, default_value_t = errors::DEFAULT_SCAN_LIMIT,
          value_parser = clap::value_parser!(u16).range(1..))]
    scan_limit: u16,
}

#[derive(Debug, Subcommand)]
enum ErrorsCommand {
    /// List the messages of `<queue>_error`, oldest first, leaving them in place.
    List {
        /// The plugin's queue (its name); repeat for several.
        #[arg(long = "queue", value_name = "QUEUE", required = true)]
        queues: Vec<String>,
        #[command(flatten)]
        filter: ErrorFilterArgs,
        /// One JSON object per line, with every field and header.
        #[arg(long)]
        json: bool,
    },
    /// Show everything about one message: properties, headers, body.
    Show {
        /// The plugin's queue (its name).
        #[arg(long)]
        queue: String,
        /// The message id.
        id: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Send the matching messages back to their queue, then take them off the error queue.
    Replay {
        /// The plugin's queue (its name).
        #[arg(long)]
        queue: String,
        #[command(flatten)]
        filter: ErrorFilterArgs,
        /// Only these message ids.
        ids: Vec<String>,
    },
    /// Remove the matching messages from the error queue.
    Purge {
        /// The plugin's queue (its name).
        #[arg(long)]
        queue: String,
        #[command(flatten)]
        filter: ErrorFilterArgs,
        /// Only these message ids.
        ids: Vec<String>,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Args)]
struct ErrorFilterArgs {
    /// Only this message type: the URN, `Namespace:Type` or `Type`; repeat for several.
    #[arg(long = "type", value_name = "TYPE")]
    types: Vec<String>,
    /// Only this fault reason (`rejected`, `retries-exhausted`, …); repeat for several.
    #[arg(long = "reason", value_name = "REASON")]
    reasons: Vec<String>,
    /// Only messages that failed since then: a duration back (2h, 30m, 1d) or an RFC 3339 time.
    #[arg(long, value_name = "WHEN")]
    since: Option<String>,
    /// Only messages that failed until then: a duration back or an RFC 3339 time.
    #[arg(long, value_name = "WHEN")]
    until: Option<String>,
    /// At most this many messages.
    #[arg(long)]
    limit: Option<usize>,
}

impl ErrorFilterArgs {
    fn selection(self, ids: Vec<String>) -> Result<Selection> {
        let now = courier_host::envelope::now_ms();
        let moment = |text: Option<String>, flag: &str| {
            text.map(|text| errors::parse_moment(&text, now).with_context(|| format!("--{flag}")))
                .transpose()
        };
        Ok(Selection {
            types: self.types,
            reasons: self.reasons,
            since_ms: moment(self.since, "since")?,
            until_ms: moment(self.until, "until")?,
            ids,
            limit: self.limit,
        })
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::Publish(args) => put(args.message, None),
        Command::Send(args) => put(args.message, Some(args.destination)),
        Command::Inspect { file, json } => inspect_file(&file, json),
        Command::Errors(args) => error_queues(args),
        Command::Plugins { json, admin } => list_plugins(&admin, json),
        Command::Deploy { file, name, admin } => deploy(&admin, &file, name.as_deref()),
        Command::Rollback { name, admin } => change_plugin(&admin, "rollback", &name),
        Command::Remove { name, admin } => change_plugin(&admin, "remove", &name),
        Command::New { name, lang, dir } => new_project(&name, lang, &dir),
        Command::Component(ComponentCommand::New { module, output }) => {
            new_component(&module, &output)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The configuration file (or the defaults), completed by `complete` (the flags and environment
/// variables that override it) and only then checked, so that a file may leave a key to the
/// environment, as the Kubernetes ConfigMap leaves the passwords to the Secret.
fn load_config(path: Option<&Path>, complete: impl FnOnce(&mut HostConfig)) -> Result<HostConfig> {
    let mut config = match path {
        Some(path) => HostConfig::parse_file(path)?,
        None => HostConfig::default(),
    };
    complete(&mut config);
    config.validate().with_context(|| match path {
        Some(path) => format!("invalid config file {}", path.display()),
        None => "invalid configuration".to_owned(),
    })?;
    Ok(config)
}

/// `--inbox-postgres-url` / `COURIER_INBOX_POSTGRES_URL`. Only a PostgreSQL inbox takes it, so
/// that the variable can be set for a whole fleet whose hosts do not all use one.
fn take_inbox_url(config: &mut HostConfig, url: Option<String>) {
    if let Some(url) = url
        && config.inbox.store == InboxStore::Postgres
    {
        config.inbox.postgres_url = Some(url);
    }
}

fn run(args: RunArgs) -> Result<()> {
    let mut config = load_config(args.config.as_deref(), |config| {
        if let Some(broker) = args.broker {
            config.broker = Some(broker);
        }
        if let Some(plugins) = args.plugins {
            config.plugins_dir = Some(plugins);
        }
        if let Some(listen) = args.admin_listen {
            config.admin.listen = listen;
        }
        if let Some(token) = args.admin_token {
            config.admin.token = Some(token);
        }
        if args.no_admin {
            config.admin.enabled = false;
        }
        if let Some(format) = args.log_format {
            config.log.format = format;
        }
        if let Some(dir) = args.data_dir {
            config.inbox.data_dir = dir;
        }
        take_inbox_url(config, args.inbox_postgres_url);
        if let Some(dir) = args.cache_dir {
            config.engine.cache_dir = dir;
        }
        if args.no_watch {
            config.reload.watch = false;
        }
        if let Some(endpoint) = args.otlp_endpoint {
            config.telemetry.otlp_endpoint = Some(endpoint);
        }
    })?;
    let telemetry = courier_host::telemetry::install(&config)?;
    let plugins_dir = config
        .plugins_dir
        .clone()
        .context("no plugins directory: pass --plugins DIR or set plugins_dir")?;
    // One spelling of every plugin path, whether it comes from the start-up scan, the watcher
    // or an upload.
    let plugins_dir = std::path::absolute(&plugins_dir)
        .with_context(|| format!("plugins directory {}", plugins_dir.display()))?;
    config.plugins_dir = Some(plugins_dir.clone());
    let options = RunOptions {
        plugins_dir,
        seed: args.seed,
        exit_when_idle: args.exit_when_idle,
        summary: args.summary,
    };
    // Every message in flight holds a thread of the blocking pool (see `dispatch`), so the pool
    // is as large as the instance pool, plus room for the runtime's own blocking work.
    let max_blocking = config.engine.max_instances as usize + 64;
    let served = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(max_blocking)
        .thread_name("courier")
        .build()
        .context("cannot start the async runtime")?
        .block_on(serve(config, options));
    telemetry.shutdown();
    served
}

struct RunOptions {
    plugins_dir: PathBuf,
    seed: Option<PathBuf>,
    exit_when_idle: bool,
    summary: Option<PathBuf>,
}

async fn serve(config: HostConfig, options: RunOptions) -> Result<()> {
    let started = Instant::now();
    let admin_config = config.admin.clone();
    let host = Arc::new(Host::new(config).await?);
    tracing::info!(broker = %host.transport().describe(), plugins = %options.plugins_dir.display(), "courier starting");
    let loaded = host.load_plugins_dir(&options.plugins_dir).await?;
    let watching = host.config().reload.watch;
    if loaded.is_empty() {
        if !watching || options.exit_when_idle {
            bail!(
                "no plugin could be loaded from {}",
                options.plugins_dir.display()
            );
        }
        tracing::warn!(dir = %options.plugins_dir.display(), "no plugin loaded yet; waiting for one to be deployed");
    }
    // Dropped when `serve` returns, which ends the watch.
    let _watcher = if watching {
        Some(host.watch_plugins(&options.plugins_dir)?)
    } else {
        None
    };

    let draining = Arc::new(AtomicBool::new(false));
    if admin_config.enabled {
        let listener = tokio::net::TcpListener::bind(admin_config.listen)
            .await
            .with_context(|| format!("cannot bind the admin API to {}", admin_config.listen))?;
        tracing::info!(address = %listener.local_addr()?, "admin API listening");
        let app = admin::app(AdminState {
            host: Arc::clone(&host),
            token: admin_config.token.as_deref().map(Arc::from),
            draining: Arc::clone(&draining),
        });
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::error!(%error, "admin API stopped");
            }
        });
    }

    if let Some(seed) = &options.seed {
        let requests = read_seed_file(seed)?;
        let count = requests.len();
        for request in requests {
            host.submit(request, "seed").await?;
        }
        tracing::info!(count, file = %seed.display(), "seed messages published");
    }

    if options.exit_when_idle {
        tokio::select! {
            result = host.wait_until_idle(Duration::from_millis(50)) => result?,
            () = courier_host::signal::shutdown() => {}
        }
    } else {
        courier_host::signal::shutdown().await;
    }
    draining.store(true, Ordering::SeqCst);
    // A second signal while draining stops the process at once.
    tokio::spawn(async {
        courier_host::signal::shutdown().await;
        eprintln!("second signal: exiting without waiting for messages in flight");
        std::process::exit(130);
    });
    host.shutdown().await;

    let summary = host.summary();
    println!(
        "\nSummary: {} plugin(s) on {} in {:.1} s",
        host.plugins().len(),
        host.transport().describe(),
        started.elapsed().as_secs_f64()
    );
    print!("{}", summary.render());
    for refusal in host.refused() {
        println!("refused: {}: {}", refusal.file, refusal.error);
    }
    if let Some(path) = &options.summary {
        let json = serde_json::to_vec_pretty(&summary)?;
        std::fs::write(path, json)
            .with_context(|| format!("cannot write summary {}", path.display()))?;
    }
    Ok(())
}

fn put(args: MessageArgs, destination: Option<String>) -> Result<()> {
    let body: serde_json::Value =
        serde_json::from_str(&args.body).context("the body is not valid JSON")?;
    let mut request = PublishRequest::new(args.message_type, body);
    request.content_type = Some(args.content_type);
    request.destination = destination;
    request.correlation_id = args.correlation_id;
    request.session_id = args.session_id;
    request.reply_to = args.reply_to;
    request.ttl_ms = args.ttl_ms;
    let body = serde_json::to_vec(&request)?;
    let text = args
        .admin
        .call(
            Method::Post,
            "/v1/messages",
            Some(("application/json", body)),
        )
        .context("the host refused the message")?;
    println!("{text}");
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum Method {
    Get,
    Post,
    Put,
    Delete,
}

/// `Authorization: Bearer <token>` when there is a token.
fn authorized<B>(call: ureq::RequestBuilder<B>, token: Option<&str>) -> ureq::RequestBuilder<B> {
    match token {
        Some(token) => call.header("Authorization", format!("Bearer {token}")),
        None => call,
    }
}

impl AdminClientArgs {
    /// Calls the admin API; the response body on success, an error naming the status and
    /// the host's reason otherwise.
    fn call(&self, method: Method, path: &str, body: Option<(&str, Vec<u8>)>) -> Result<String> {
        let url = format!("{}{path}", self.admin.trim_end_matches('/'));
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // An upload is compiled before the host answers.
            .timeout_global(Some(Duration::from_secs(300)))
            .build()
            .into();
        let token = self.token.as_deref();
        let sent = match method {
            Method::Get => authorized(agent.get(&url), token).call(),
            Method::Delete => authorized(agent.delete(&url), token).call(),
            Method::Post | Method::Put => {
                let call = match method {
                    Method::Put => agent.put(&url),
                    _ => agent.post(&url),
                };
                let call = authorized(call, token);
                match body {
                    Some((content_type, bytes)) => {
                        call.header("Content-Type", content_type).send(&bytes[..])
                    }
                    None => call.send_empty(),
                }
            }
        };
        let mut response = sent.with_context(|| {
            format!("cannot reach the admin API at {}", redact_url(&self.admin))
        })?;
        let status = response.status();
        let text = response
            .body_mut()
            .with_config()
            .limit(ANSWER_LIMIT)
            .read_to_string()
            .with_context(|| {
                format!(
                    "cannot read the admin API's answer ({status}; at most {} MiB is read)",
                    ANSWER_LIMIT >> 20
                )
            })?;
        if !status.is_success() {
            let reason = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or(text);
            bail!("{status}: {reason}");
        }
        Ok(text)
    }
}

fn list_plugins(admin: &AdminClientArgs, json: bool) -> Result<()> {
    let text = admin.call(Method::Get, "/v1/plugins", None)?;
    if json {
        println!("{text}");
        return Ok(());
    }
    let plugins: Vec<serde_json::Value> =
        serde_json::from_str(&text).context("the admin API answered something else than JSON")?;
    println!(
        "{:<24} {:<12} {:<14} {:<8} {:<11} {:>10} {:>9}  LOADED",
        "NAME", "VERSION", "DIGEST", "CODE", "ORDER", "HANDLED", "FAILURES"
    );
    for plugin in &plugins {
        let text = |key: &str| plugin[key].as_str().unwrap_or("-").to_owned();
        let number = |key: &str| plugin[key].as_u64().unwrap_or(0);
        let digest = text("digest");
        let loaded = plugin["loaded_at_ms"]
            .as_i64()
            .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
            .map(|at| at.to_string())
            .unwrap_or_default();
        println!(
            "{:<24} {:<12} {:<14} {:<8} {:<11} {:>10} {:>9}  {loaded}",
            text("name"),
            text("version"),
            &digest[..digest.len().min(12)],
            text("code"),
            order_column(plugin),
            number("handled"),
            number("failures"),
        );
    }
    Ok(())
}

/// The ORDER column of `courier plugins`: `session/N` for a plugin ordered by session over N
/// partitions (on RabbitMQ), `any` for one with no ordering guarantee, `-` if the host does
/// not say.
fn order_column(plugin: &serde_json::Value) -> String {
    match (plugin["ordered"].as_bool(), plugin["partitions"].as_u64()) {
        (Some(true), Some(partitions)) => format!("session/{partitions}"),
        (Some(false), _) => "any".to_owned(),
        _ => "-".to_owned(),
    }
}

fn deploy(admin: &AdminClientArgs, file: &Path, name: Option<&str>) -> Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let path = match name {
        Some(name) => format!("/v1/plugins/{name}"),
        None => "/v1/plugins".to_owned(),
    };
    // PUT names the plugin; POST lets the component name itself.
    let text = match name {
        Some(_) => admin.call(Method::Put, &path, Some(("application/wasm", bytes))),
        None => admin.call(Method::Post, &path, Some(("application/wasm", bytes))),
    }
    .with_context(|| format!("{} was not deployed", file.display()))?;
    print_deployed(&text)
}

fn change_plugin(admin: &AdminClientArgs, action: &str, name: &str) -> Result<()> {
    let text = match action {
        "rollback" => admin.call(Method::Post, &format!("/v1/plugins/{name}/rollback"), None)?,
        _ => admin.call(Method::Delete, &format!("/v1/plugins/{name}"), None)?,
    };
    if action == "rollback" {
        return print_deployed(&text);
    }
    let removed: serde_json::Value = serde_json::from_str(&text)?;
    println!(
        "removed {} {} (its queue keeps the messages it holds)",
        removed["name"].as_str().unwrap_or(name),
        removed["version"].as_str().unwrap_or("")
    );
    Ok(())
}

fn print_deployed(text: &str) -> Result<()> {
    let done: serde_json::Value =
        serde_json::from_str(text).context("the admin API answered something else than JSON")?;
    let plugin = &done["plugin"];
    let name = plugin["name"].as_str().unwrap_or("?");
    let version = plugin["version"].as_str().unwrap_or("?");
    let elapsed = done["elapsed_ms"].as_u64().unwrap_or(0);
    match done["change"].as_str() {
        Some("added") => println!("{name} {version} added ({elapsed} ms)"),
        Some("swapped") => println!(
            "{name} {} -> {version} ({elapsed} ms, code: {})",
            done["from"].as_str().unwrap_or("?"),
            plugin["code"].as_str().unwrap_or("?")
        ),
        _ => println!("{name} {version} is already the current version"),
    }
    Ok(())
}

/// A `courier errors` command with its options worked out, whichever broker it goes to.
enum ErrorsTask {
    List(ListOptions),
    Show {
        queue: String,
        id: String,
        json: bool,
    },
    Replay(MoveOptions),
    Purge(MoveOptions, bool),
}

impl ErrorsTask {
    fn of(command: ErrorsCommand, scan_limit: u16) -> Result<Self> {
        let moving = |queue, filter: ErrorFilterArgs, ids| -> Result<MoveOptions> {
            Ok(MoveOptions {
                queue,
                selection: filter.selection(ids)?,
                scan_limit,
            })
        };
        Ok(match command {
            ErrorsCommand::List {
                queues,
                filter,
                json,
            } => ErrorsTask::List(ListOptions {
                queues,
                selection: filter.selection(Vec::new())?,
                json,
                scan_limit,
            }),
            ErrorsCommand::Show { queue, id, json } => ErrorsTask::Show { queue, id, json },
            ErrorsCommand::Replay { queue, filter, ids } => {
                ErrorsTask::Replay(moving(queue, filter, ids)?)
            }
            ErrorsCommand::Purge {
                queue,
                filter,
                ids,
                yes,
            } => ErrorsTask::Purge(moving(queue, filter, ids)?, yes),
        })
    }
}

fn error_queues(args: ErrorsArgs) -> Result<()> {
    let config = load_config(args.config.as_deref(), |config| {
        if let Some(broker) = args.broker {
            config.broker = Some(broker);
        }
        take_inbox_url(config, args.inbox_postgres_url);
    })?;
    let task = ErrorsTask::of(args.command, args.scan_limit)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let mut out = std::io::stdout().lock();
    let url = config.broker.as_deref().unwrap_or("memory://");
    if BrokerUrl::parse(url).context("broker")? == BrokerUrl::Memory {
        // The embedded broker's error queues live in its host: ask its admin API.
        use errors::embedded;
        let admin = AdminClientArgs {
            admin: args.admin,
            token: args.token,
        };
        let done = match task {
            ErrorsTask::List(options) => embedded::list(&admin, &options, &mut out),
            ErrorsTask::Show { queue, id, json } => {
                embedded::show(&admin, &queue, &id, json, &mut out)
            }
            ErrorsTask::Replay(options) => {
                runtime.block_on(embedded::replay(&admin, &options, &mut out))
            }
            ErrorsTask::Purge(options, yes) => {
                runtime.block_on(embedded::purge(&admin, &options, yes, &mut out))
            }
        };
        return done.with_context(|| {
            format!(
                "no RabbitMQ given (--broker amqp://…), so the embedded broker of the host at \
                 {} was asked",
                redact_url(&admin.admin)
            )
        });
    }
    let broker = errors::Broker::from_config(&config)?;
    runtime.block_on(async {
        match task {
            ErrorsTask::List(options) => errors::list(&broker, &options, &mut out).await,
            ErrorsTask::Show { queue, id, json } => {
                errors::show(&broker, &queue, &id, json, args.scan_limit, &mut out).await
            }
            ErrorsTask::Replay(options) => errors::replay(&broker, &options, &mut out).await,
            ErrorsTask::Purge(options, yes) => {
                errors::purge(&broker, &options, yes, &mut out).await
            }
        }
    })
}

impl errors::embedded::AdminApi for AdminClientArgs {
    fn get(&self, path: &str) -> Result<String> {
        self.call(Method::Get, path, None)
    }

    fn post_json(&self, path: &str, body: &serde_json::Value) -> Result<String> {
        let body = serde_json::to_vec(body)?;
        self.call(Method::Post, path, Some(("application/json", body)))
    }
}

fn inspect_file(file: &Path, json: bool) -> Result<()> {
    // One component looked at once: nothing to cache.
    let settings = courier_host::config::EngineConfig {
        cache: false,
        ..Default::default()
    };
    let engine = CourierEngine::new(&settings)?;
    let inspection = inspect(&engine, file)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&inspection)?);
    } else {
        print!("{inspection}");
    }
    Ok(())
}

fn new_project(
    name: &str,
    language: courier_host::scaffold::Language,
    parent: &Path,
) -> Result<()> {
    let dir = courier_host::scaffold::create(name, language, parent)?;
    println!("created {} ({language})", dir.display());
    println!(
        "next: cd {} && {}",
        dir.display(),
        courier_host::scaffold::next_steps(language)
    );
    Ok(())
}

fn new_component(module: &Path, output: &Path) -> Result<()> {
    let bytes =
        std::fs::read(module).with_context(|| format!("cannot read {}", module.display()))?;
    let component = courier_host::scaffold::component_from_module(&bytes)
        .with_context(|| format!("{} cannot be made a Courier component", module.display()))?;
    // Written under a temporary name and renamed, so a plugins directory never sees half of it.
    let partial = output.with_extension("wasm.partial");
    std::fs::write(&partial, &component)
        .with_context(|| format!("cannot write {}", partial.display()))?;
    if let Err(error) = std::fs::rename(&partial, output) {
        let _ = std::fs::remove_file(&partial);
        return Err(error).with_context(|| format!("cannot write {}", output.display()));
    }
    println!("wrote {} ({} bytes)", output.display(), component.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::order_column;
    use serde_json::json;

    #[test]
    fn the_order_column_names_partitions_or_no_guarantee() {
        let ordered = json!({"ordered": true, "partitions": 256});
        assert_eq!(order_column(&ordered), "session/256");
        assert_eq!(
            order_column(&json!({"ordered": false, "partitions": null})),
            "any"
        );
        assert_eq!(order_column(&json!({"name": "from an older host"})), "-");
    }
}
