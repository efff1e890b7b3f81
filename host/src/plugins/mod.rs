//! The wasmtime host of tenant plugins (DESIGN.md "Plugins"): one
//! [`Engine`] with the component model, epoch interruption driven by a
//! ticker thread, fuel, and the pooling allocator when the machine allows
//! it; compiled components cached by digest (in memory, and on disk keyed
//! by the engine's compatibility hash); a fresh [`Store`] per call with
//! memory, instance, table and hostcall-copy caps, a deadline, and WASI
//! granting nothing.
//!
//! A call is a future, awaited on the request's own task: running guest
//! code yields to the executor at every epoch tick, and a guest waiting in
//! WASI (a sleep, a poll) waits on a host future. At the deadline the
//! future is dropped, and with it the store, its instance and its slot, so
//! no guest outlives its deadline, whatever it calls. Slots are capped per
//! tenant and in all; compilation never happens on the search path.
//!
//! Nothing a plugin does can fail a search or a write on its own: every
//! call returns a [`CallError`] the caller turns into a fallback, and the
//! failure is counted in `/metrics`. What a guest prints or traps with goes
//! to the service log, never to a response.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::hash::Hasher;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt, Shared};
use moka::future::Cache;
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter, Store, Trap,
    UpdateDeadline,
};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

pub mod bindings;
pub mod registry;

pub use registry::{IngestOutcome, PluginChoice, PluginRegistry, PluginWarning, ResolveError};

use bindings::filter::FilterPre;
use bindings::ingest::IngestPre;
use bindings::ranker::RankerPre;
pub use bindings::{Candidate, Level, Product as PluginProduct, Query, QueryKind};

use crate::media::BlobStore;
use crate::telemetry::{PLUGIN_CALL_DURATION, PLUGIN_CALLS, PLUGIN_COMPILATIONS, PLUGIN_LOG_DROPPED};

const MIB: u64 = 1024 * 1024;
/// Largest upload (API.md).
pub const MAX_UPLOAD_BYTES: usize = 20 * 1024 * 1024;
/// The epoch ticks this often; deadlines are whole ticks.
const TICK: Duration = Duration::from_millis(1);
/// Captured guest stdout/stderr per call (each goes to the log, never to a
/// response): enough for a panic message.
const OUTPUT_CAP: usize = 4096;
/// Most random bytes one WASI call may ask for (wasmtime-wasi allows 64 MiB,
/// made synchronously: about a quarter of a second of a host thread).
const MAX_RANDOM_BYTES: u64 = 64 * 1024;
/// Bytes a guest may hand the host in one host call or in its result
/// (wasmtime's hostcall fuel), at the least: a log line, a small output.
const MIN_HOSTCALL_BYTES: usize = 16 * 1024;
/// An ingest plugin's output: the API's product limits (model.rs) in
/// UTF-8 bytes, with room to spare; more is refused before it is copied.
const INGEST_OUTPUT_BYTES: usize = 256 * 1024;
/// Log lines kept per call; the rest are dropped (and counted).
const MAX_LOG_LINES: usize = 20;
/// A log line is cut at this many bytes.
const MAX_LOG_LINE_BYTES: usize = 1024;
/// A guest that calls `log` more often than this in one call is stopped.
const MAX_LOG_CALLS: usize = 1000;
/// Resource handles (WASI streams and the like) a call may hold at once.
const MAX_RESOURCES: usize = 64;
/// Core instances, tables and memories one call may create: a Rust
/// component needs a handful (its module plus adapter shims).
const MAX_INSTANCES: usize = 32;
const MAX_TABLES: usize = 32;
const MAX_MEMORIES: usize = 4;
const MAX_TABLE_ELEMENTS: usize = 100_000;

/// What a plugin does; each is a world of `wit/plugin.wit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum World {
    Filter,
    Ranker,
    Ingest,
}

impl World {
    pub const ALL: [World; 3] = [World::Filter, World::Ranker, World::Ingest];

    pub fn as_str(self) -> &'static str {
        match self {
            World::Filter => "filter",
            World::Ranker => "ranker",
            World::Ingest => "ingest",
        }
    }

    pub fn parse(s: &str) -> Option<World> {
        World::ALL.into_iter().find(|w| w.as_str() == s)
    }
}

/// Settings of the host (`[plugins]`).
#[derive(Debug, Clone)]
pub struct PluginsConfig {
    /// Memory a call may use unless the tenant set its own cap.
    pub memory_bytes: u64,
    /// Highest cap a tenant may set.
    pub max_memory_bytes: u64,
    pub filter_deadline: Duration,
    pub ranker_deadline: Duration,
    pub ingest_deadline: Duration,
    /// Fuel per call: a second guard, should the epoch ticker ever stall.
    pub fuel: u64,
    /// Calls running at once; more wait (inside their deadline) for a slot.
    pub max_concurrent_calls: usize,
    /// Calls one tenant may run at once, so no tenant starves the others.
    pub max_concurrent_calls_per_tenant: usize,
    /// Longest a compilation may take; an upload that takes longer is
    /// refused.
    pub compile_timeout: Duration,
    /// Where compiled components are kept (`data_dir/plugins/compiled`).
    pub compiled_dir: PathBuf,
    /// Try the pooling allocator (falls back when the probe fails).
    pub pooling: bool,
}

impl PluginsConfig {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            memory_bytes: 64 * MIB,
            max_memory_bytes: 256 * MIB,
            filter_deadline: Duration::from_millis(10),
            ranker_deadline: Duration::from_millis(10),
            ingest_deadline: Duration::from_millis(100),
            fuel: 1_000_000_000,
            max_concurrent_calls: default_concurrent_calls(),
            max_concurrent_calls_per_tenant: default_concurrent_calls_per_tenant(default_concurrent_calls()),
            compile_timeout: Duration::from_secs(30),
            compiled_dir: data_dir.join("plugins").join("compiled"),
            pooling: true,
        }
    }

    /// The deadline of a call of `world`, slot wait and instantiation
    /// included.
    pub fn deadline(&self, world: World) -> Duration {
        match world {
            World::Filter => self.filter_deadline,
            World::Ranker => self.ranker_deadline,
            World::Ingest => self.ingest_deadline,
        }
    }
}

/// Plugin calls at once by default: four per core. Guest code runs on the
/// request's own task and yields every tick, so more slots than cores only
/// serve calls that wait (in WASI, or for the executor).
pub fn default_concurrent_calls() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (4 * cores).max(4)
}

/// One tenant's share by default: a quarter of all slots (at least one).
pub fn default_concurrent_calls_per_tenant(total: usize) -> usize {
    (total / 4).max(1)
}

/// Why an upload is refused (all 422 but `Internal`).
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("the file is not a WebAssembly binary (it does not start with `\\0asm`)")]
    NotWasm,
    #[error(
        "the file is a core WebAssembly module, not a component: build it for the wasm32-wasip2 target \
         (or wrap it with `wasm-tools component new`)"
    )]
    CoreModule,
    #[error("the component is invalid: {0}")]
    Invalid(String),
    #[error("the component does not implement the `{world}` world of vitrine:plugin@0.1.0: {reason}")]
    WrongWorld { world: &'static str, reason: String },
    #[error("compiling the component took longer than the limit of {} ms (`plugins.compile_timeout_ms`)", .0.as_millis())]
    CompileTimeout(Duration),
    /// Every compile slot (or this tenant's one) stayed busy: 503.
    #[error("the plugin compiler is busy")]
    Busy,
    #[error("{0}")]
    Internal(String),
}

impl UploadError {
    /// The API error code.
    pub fn code(&self) -> crate::error_code::ErrorCode {
        use crate::error_code::ErrorCode;
        match self {
            UploadError::NotWasm => ErrorCode::NotWasm,
            UploadError::CoreModule => ErrorCode::NotAComponent,
            UploadError::Invalid(_) => ErrorCode::InvalidComponent,
            UploadError::WrongWorld { .. } => ErrorCode::WrongWorld,
            UploadError::CompileTimeout(_) => ErrorCode::CompileTimeout,
            UploadError::Busy => ErrorCode::Busy,
            UploadError::Internal(_) => ErrorCode::InternalError,
        }
    }
}

/// Why a call fell back. The `Display` text may quote what the guest did
/// and goes to the log only; responses carry [`CallError::kind`] and
/// [`CallError::public_message`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    #[error("the plugin ran past its deadline of {0} ms")]
    Timeout(u64),
    #[error("the plugin used up its fuel")]
    OutOfFuel,
    #[error("the plugin hit its memory limit of {0} MiB")]
    MemoryLimit(u64),
    #[error("the plugin overflowed its stack")]
    StackOverflow,
    #[error("the plugin trapped: {0}")]
    Trap(String),
    #[error("the plugin's output is unusable: {0}")]
    BadOutput(String),
    #[error("the plugin logged more than {MAX_LOG_CALLS} lines in one call and was stopped")]
    LogFlood,
    #[error("too many plugin calls are running; no slot freed up before the deadline")]
    Busy,
    #[error("the plugin cannot be loaded: {0}")]
    Unavailable(String),
    #[error("the plugin is not ready on this node yet (it is being loaded or compiled)")]
    NotReady,
}

impl CallError {
    /// The `outcome` label of the call metric.
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::Timeout(_) => "timeout",
            CallError::OutOfFuel => "out_of_fuel",
            CallError::MemoryLimit(_) => "memory_limit",
            CallError::StackOverflow => "stack_overflow",
            CallError::Trap(_) => "trap",
            CallError::BadOutput(_) => "bad_output",
            CallError::LogFlood => "log_flood",
            CallError::Busy => "busy",
            CallError::Unavailable(_) => "unavailable",
            CallError::NotReady => "not_ready",
        }
    }

    /// A fixed sentence per kind, for responses: nothing a guest wrote
    /// (ids, panic messages, output) ever reaches a client.
    pub fn public_message(&self) -> &'static str {
        match self {
            CallError::Timeout(_) => "the plugin ran past its deadline",
            CallError::OutOfFuel => "the plugin used up its fuel",
            CallError::MemoryLimit(_) => "the plugin hit its memory limit",
            CallError::StackOverflow => "the plugin overflowed its stack",
            CallError::Trap(_) => "the plugin trapped",
            CallError::BadOutput(_) => "the plugin's output is unusable",
            CallError::LogFlood => "the plugin logged too much and was stopped",
            CallError::Busy => "no plugin slot freed up before the deadline",
            CallError::Unavailable(_) => "the plugin cannot be loaded",
            CallError::NotReady => "the plugin is not ready on this node yet",
        }
    }
}

/// One plugin version, as searches and writes run it.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginRef {
    pub tenant: String,
    pub name: String,
    pub version: i64,
    pub world: World,
    pub digest: String,
    /// The tenant's parameters, passed to every call.
    pub params: Vec<(String, String)>,
    /// The tenant's memory cap for this plugin, MiB (else the default).
    pub memory_mb: Option<u64>,
}

/// A component ready to instantiate for its world.
enum Prepared {
    Filter(FilterPre<CallState>),
    Ranker(RankerPre<CallState>),
    Ingest(IngestPre<CallState>),
}

/// Caps memory, tables and instances of one call, and remembers whether
/// the memory cap was what stopped the guest.
struct Limiter {
    memory_bytes: usize,
    hit_memory: bool,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.hit_memory = true;
            return Err(wasmtime::Error::msg("memory limit reached"));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

/// What the guest logged during one call.
#[derive(Default)]
struct LogState {
    lines: Vec<(Level, String)>,
    calls: usize,
    dropped: usize,
    flooded: bool,
}

/// What one call said: its log lines and its captured stdout and stderr.
/// Shared with the store, so that a call dropped at its deadline still has
/// its output reported.
#[derive(Clone)]
struct CallOutput {
    log: Arc<Mutex<LogState>>,
    stdout: MemoryOutputPipe,
    stderr: MemoryOutputPipe,
}

impl CallOutput {
    fn new() -> Self {
        Self {
            log: Arc::default(),
            stdout: MemoryOutputPipe::new(OUTPUT_CAP),
            stderr: MemoryOutputPipe::new(OUTPUT_CAP),
        }
    }

    fn log(&self) -> std::sync::MutexGuard<'_, LogState> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The data of one call's [`Store`].
struct CallState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: Limiter,
    output: CallOutput,
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl bindings::filter::vitrine::plugin::types::Host for CallState {}

impl bindings::Host for CallState {
    fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        let mut log = self.output.log();
        log.calls += 1;
        if log.calls > MAX_LOG_CALLS {
            log.flooded = true;
            return Err(wasmtime::Error::msg("log flood"));
        }
        if log.lines.len() < MAX_LOG_LINES {
            let mut message = message;
            if message.len() > MAX_LOG_LINE_BYTES {
                let mut cut = MAX_LOG_LINE_BYTES;
                while !message.is_char_boundary(cut) {
                    cut -= 1;
                }
                message.truncate(cut);
                message.push('…');
            }
            log.lines.push((level, message));
        } else {
            log.dropped += 1;
        }
        Ok(())
    }
}

/// The plugin host. Cheap to clone.
#[derive(Clone)]
pub struct PluginHost {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    linker: Linker<CallState>,
    /// (digest, world) → component ready to instantiate. `try_get_with`
    /// makes concurrent first uses of a version share one load.
    prepared: Cache<(String, World), Arc<Prepared>>,
    /// Slots of all calls, and of each tenant's.
    permits: Arc<Semaphore>,
    tenant_permits: TenantSlots,
    /// Compilations at once: one per core in all, one per tenant. Each may
    /// use every core (parallel compilation): these bound how many run, so
    /// that one tenant's slow components cannot hold every slot. An
    /// abandoned compilation keeps its slots until it ends.
    compile_slots: Arc<Semaphore>,
    tenant_compile_slots: TenantSlots,
    /// The versions being made ready, each by one shared task.
    /// Keyed per tenant (it fetches that tenant's blob under that tenant's
    /// compile slot), so that one tenant's failure never stands for
    /// another's copy of the same component.
    readying: Mutex<HashMap<ReadyKey, Readying>>,
    /// Versions that recently failed to get ready, with why; retried after
    /// [`FAILED_RETRY`] (or at once by a warm-up).
    failed: Cache<ReadyKey, CallError>,
    /// Set when the server shuts down: running calls end at once.
    closing: tokio::sync::watch::Sender<bool>,
    config: PluginsConfig,
    /// `compiled_dir/<engine compatibility hash>`.
    artifacts: PathBuf,
    blobs: BlobStore,
    pooling: bool,
    ticker: Ticker,
    /// Components this host compiled (uploads and cold or corrupt caches).
    compilations: AtomicU64,
}

/// Advances the engine's epoch every [`TICK`] while guest code runs, and
/// sleeps (parked) while none does: an idle host never wakes up, and
/// searches without plugins share their cores with no ticker.
struct Ticker {
    state: Arc<TickerState>,
    thread: std::thread::Thread,
}

#[derive(Default)]
struct TickerState {
    /// Calls running guest code now.
    running: AtomicUsize,
    stop: AtomicBool,
}

impl Ticker {
    fn start(engine: Engine) -> std::io::Result<Self> {
        let state = Arc::new(TickerState::default());
        let shared = state.clone();
        let handle = std::thread::Builder::new()
            .name("plugin-epoch".into())
            .spawn(move || {
                while !shared.stop.load(Ordering::Acquire) {
                    if shared.running.load(Ordering::Acquire) == 0 {
                        // An unpark between the load and here is kept as
                        // a token: park then returns at once.
                        std::thread::park();
                        continue;
                    }
                    std::thread::sleep(TICK);
                    engine.increment_epoch();
                }
            })?;
        Ok(Self {
            state,
            thread: handle.thread().clone(),
        })
    }

    /// Keeps the epoch advancing until the guard is dropped.
    fn running(&self) -> TickGuard {
        if self.state.running.fetch_add(1, Ordering::AcqRel) == 0 {
            self.thread.unpark();
        }
        TickGuard(self.state.clone())
    }
}

/// The host is gone: the thread ends at its next wake-up.
impl Drop for Ticker {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Release);
        self.thread.unpark();
    }
}

struct TickGuard(Arc<TickerState>);

impl Drop for TickGuard {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::AcqRel);
    }
}

fn engine_config(config: &PluginsConfig, pooling: bool) -> Config {
    let mut c = Config::new();
    c.wasm_component_model(true);
    c.epoch_interruption(true);
    c.consume_fuel(true);
    // Deep recursion ends in a clean stack-overflow trap well before the
    // host thread's own stack is at risk.
    c.max_wasm_stack(512 * 1024);
    if pooling {
        let calls = u32::try_from(config.max_concurrent_calls).unwrap_or(u32::MAX);
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(calls)
            .total_core_instances(calls.saturating_mul(MAX_INSTANCES as u32))
            .total_memories(calls.saturating_mul(MAX_MEMORIES as u32))
            .total_tables(calls.saturating_mul(MAX_TABLES as u32))
            .max_core_instances_per_component(MAX_INSTANCES as u32)
            .max_memories_per_component(MAX_MEMORIES as u32)
            .max_tables_per_component(MAX_TABLES as u32)
            .total_stacks(calls)
            .max_memory_size(usize::try_from(config.max_memory_bytes).unwrap_or(usize::MAX));
        c.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    c
}

/// Feeds the engine's compatibility hash into SHA-256 (a stable name for
/// the artifact directory: artifacts of another wasmtime or other settings
/// are never even looked at).
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The blob key of a tenant's uploaded component.
pub fn blob_key(tenant: &str, digest: &str) -> String {
    format!("plugins/{tenant}/{digest}.wasm")
}

/// Checks the binary header before handing anything to the compiler.
fn check_header(bytes: &[u8]) -> Result<(), UploadError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(UploadError::NotWasm);
    }
    // Core modules are version 1 (layer 0); components set layer 1.
    if bytes[4..8] == [1, 0, 0, 0] {
        return Err(UploadError::CoreModule);
    }
    Ok(())
}

impl PluginHost {
    /// Builds the engine (pooling allocator if `config.pooling` and the
    /// probe succeeds), the linker, and starts the epoch ticker.
    pub fn new(config: PluginsConfig, blobs: BlobStore) -> Result<Self, String> {
        let (engine, pooling) = match config.pooling {
            true => match Engine::new(&engine_config(&config, true)) {
                Ok(e) => (e, true),
                Err(e) => {
                    tracing::warn!(error = %e, "plugins: pooling allocator unavailable; allocating on demand");
                    (
                        Engine::new(&engine_config(&config, false)).map_err(|e| e.to_string())?,
                        false,
                    )
                }
            },
            false => (
                Engine::new(&engine_config(&config, false)).map_err(|e| e.to_string())?,
                false,
            ),
        };
        let mut linker: Linker<CallState> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| e.to_string())?;
        bindings::filter::Filter::add_to_linker::<CallState, HasSelf<CallState>>(&mut linker, |s| s)
            .map_err(|e| e.to_string())?;
        let mut hasher = ShaHasher(Sha256::new());
        std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut hasher);
        let compat = hex(&hasher.0.finalize()[..12]);
        let artifacts = config.compiled_dir.join(compat);
        std::fs::create_dir_all(&artifacts)
            .map_err(|e| format!("cannot create {}: {e}", artifacts.display()))?;
        let ticker =
            Ticker::start(engine.clone()).map_err(|e| format!("cannot start the epoch ticker: {e}"))?;
        tracing::info!(
            pooling,
            max_concurrent_calls = config.max_concurrent_calls,
            max_concurrent_calls_per_tenant = config.max_concurrent_calls_per_tenant,
            "plugin host ready"
        );
        Ok(Self {
            inner: Arc::new(Inner {
                engine,
                linker,
                prepared: Cache::builder().max_capacity(1024).build(),
                permits: Arc::new(Semaphore::new(config.max_concurrent_calls.max(1))),
                tenant_permits: TenantSlots::default(),
                compile_slots: Arc::new(Semaphore::new(
                    std::thread::available_parallelism().map_or(1, |n| n.get()),
                )),
                tenant_compile_slots: TenantSlots::default(),
                readying: Mutex::default(),
                failed: Cache::builder()
                    .max_capacity(10_000)
                    .time_to_live(FAILED_RETRY)
                    .build(),
                closing: tokio::sync::watch::Sender::new(false),
                config,
                artifacts,
                blobs,
                pooling,
                ticker,
                compilations: AtomicU64::new(0),
            }),
        })
    }

    pub fn config(&self) -> &PluginsConfig {
        &self.inner.config
    }

    /// Where components are stored.
    pub fn blobs(&self) -> &BlobStore {
        &self.inner.blobs
    }

    /// How many components this host compiled so far.
    pub fn compilations(&self) -> u64 {
        self.inner.compilations.load(Ordering::Relaxed)
    }

    /// Where the compiled form of a component is kept.
    pub fn artifact_file(&self, digest: &str) -> PathBuf {
        self.artifact_path(digest)
    }

    /// Whether the pooling allocator is in use.
    pub fn pooling(&self) -> bool {
        self.inner.pooling
    }

    /// The server is shutting down: running and new calls end now (their
    /// searches fall back), so in-flight requests finish at once and no
    /// guest is left running when the runtime stops.
    pub fn shut_down(&self) {
        self.inner.closing.send_replace(true);
    }

    /// Validates an upload against `world`, compiles it once (kept in memory
    /// and on disk) and stores the original through object_store. Returns
    /// the digest (SHA-256 of the bytes, hex). A compilation that takes
    /// longer than `compile_timeout` refuses the upload.
    pub async fn upload(&self, tenant: &str, world: World, bytes: Bytes) -> Result<String, UploadError> {
        check_header(&bytes)?;
        let digest = sha256_hex(&bytes);
        let prepared = self
            .compile(tenant, bytes.clone(), world, digest.clone(), "upload")
            .await
            .map_err(|e| match e {
                CompileFailure::Invalid(m) => UploadError::Invalid(m),
                CompileFailure::WrongWorld(reason) => UploadError::WrongWorld {
                    world: world.as_str(),
                    reason,
                },
                CompileFailure::TimedOut => UploadError::CompileTimeout(self.inner.config.compile_timeout),
                CompileFailure::Busy => UploadError::Busy,
                CompileFailure::Internal(m) => UploadError::Internal(m),
            })?;
        self.inner
            .blobs
            .put(&blob_key(tenant, &digest), bytes)
            .await
            .map_err(|e| UploadError::Internal(format!("cannot store the component: {e}")))?;
        self.inner
            .failed
            .invalidate(&(tenant.to_owned(), digest.clone(), world))
            .await;
        self.inner
            .prepared
            .insert((digest.clone(), world), Arc::new(prepared))
            .await;
        Ok(digest)
    }

    /// Compiles a component on the blocking pool, under the tenant's compile
    /// slot and a global one (waiting for them at most `compile_timeout`:
    /// `Busy`), then under the compile limit; links it for `world` and keeps
    /// the artifact. A compilation past the limit is abandoned: it ends on
    /// its own thread, holding its slots, so abandoned ones cannot pile up,
    /// and keeps nothing.
    async fn compile(
        &self,
        tenant: &str,
        bytes: Bytes,
        world: World,
        digest: String,
        reason: &'static str,
    ) -> Result<Prepared, CompileFailure> {
        let limit = self.inner.config.compile_timeout;
        let slots = async {
            let closed = |_| CompileFailure::Internal("the compiler is shut down".into());
            let tenant = self
                .inner
                .tenant_compile_slots
                .get(tenant, 1)
                .acquire_owned()
                .await
                .map_err(closed)?;
            let global = self
                .inner
                .compile_slots
                .clone()
                .acquire_owned()
                .await
                .map_err(closed)?;
            Ok::<_, CompileFailure>([global, tenant])
        };
        let slots = tokio::time::timeout(limit, slots)
            .await
            .map_err(|_| CompileFailure::Busy)??;
        let abandoned = Arc::new(AtomicBool::new(false));
        let host = self.clone();
        let flag = abandoned.clone();
        let work = async move {
            tokio::task::spawn_blocking(move || {
                let _slots = slots;
                let component = Component::new(&host.inner.engine, &bytes)
                    .map_err(|e| CompileFailure::Invalid(format!("{e:#}")))?;
                if flag.load(Ordering::Acquire) {
                    return Err(CompileFailure::TimedOut);
                }
                let prepared = host
                    .prepare(&component, world)
                    .map_err(CompileFailure::WrongWorld)?;
                metrics::counter!(PLUGIN_COMPILATIONS, "reason" => reason).increment(1);
                host.inner.compilations.fetch_add(1, Ordering::Relaxed);
                host.write_artifact(&digest, &component);
                Ok(prepared)
            })
            .await
            .map_err(|e| CompileFailure::Internal(format!("compilation task failed: {e}")))?
        };
        match tokio::time::timeout(limit, work).await {
            Ok(result) => result,
            Err(_) => {
                abandoned.store(true, Ordering::Release);
                Err(CompileFailure::TimedOut)
            }
        }
    }

    /// Links a compiled component for `world`: every import must be one the
    /// host provides (WASI with nothing granted, and `host.log`), and the
    /// world's export must be there with the right type.
    fn prepare(&self, component: &Component, world: World) -> Result<Prepared, String> {
        let pre = self
            .inner
            .linker
            .instantiate_pre(component)
            .map_err(|e| format!("{e:#}"))?;
        Ok(match world {
            World::Filter => Prepared::Filter(FilterPre::new(pre).map_err(|e| format!("{e:#}"))?),
            World::Ranker => Prepared::Ranker(RankerPre::new(pre).map_err(|e| format!("{e:#}"))?),
            World::Ingest => Prepared::Ingest(IngestPre::new(pre).map_err(|e| format!("{e:#}"))?),
        })
    }

    fn artifact_path(&self, digest: &str) -> PathBuf {
        self.inner.artifacts.join(format!("{digest}.cwasm"))
    }

    /// Writes `<sha256 of the artifact><artifact>` atomically (temp file +
    /// rename), so a reader sees a whole file or none, and a damaged one
    /// fails its checksum.
    fn write_artifact(&self, digest: &str, component: &Component) {
        let result = (|| -> Result<(), String> {
            let artifact = component.serialize().map_err(|e| e.to_string())?;
            let mut file = Sha256::digest(&artifact).to_vec();
            file.extend_from_slice(&artifact);
            let path = self.artifact_path(digest);
            let tmp = path.with_extension(format!("tmp{}", uuid::Uuid::new_v4().simple()));
            std::fs::write(&tmp, &file).map_err(|e| e.to_string())?;
            std::fs::rename(&tmp, &path).map_err(|e| e.to_string())
        })();
        if let Err(e) = result {
            // Only a cost: the next start compiles again.
            tracing::warn!(digest, error = %e, "plugins: cannot keep the compiled component on disk");
        }
    }

    /// Loads a compiled artifact this host wrote, after checking its
    /// checksum; the reason to compile when it is missing (`cold`), or
    /// damaged or from another engine (`corrupt`).
    fn read_artifact(&self, digest: &str) -> Result<Component, &'static str> {
        let path = self.artifact_path(digest);
        let file = match std::fs::read(&path) {
            Ok(f) => f,
            Err(_) => return Err("cold"),
        };
        if file.len() < 32 || Sha256::digest(&file[32..]).as_slice() != &file[..32] {
            tracing::warn!(digest, path = %path.display(), "plugins: compiled component is corrupt; recompiling");
            let _ = std::fs::remove_file(&path);
            return Err("corrupt");
        }
        // SAFETY: the bytes are an artifact this host serialized itself
        // (written atomically under the engine's compatibility hash) and
        // their SHA-256 matches the one recorded when it was written, so
        // they are exactly what `Component::serialize` produced.
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize(&self.inner.engine, &file[32..]) };
        match component {
            Ok(c) => Ok(c),
            Err(e) => {
                tracing::warn!(digest, error = %e, "plugins: compiled component unusable; recompiling");
                let _ = std::fs::remove_file(&path);
                Err("corrupt")
            }
        }
    }

    /// The component of a call: from memory, else made ready by a task of
    /// its own ([`Self::readying`]) that the call waits for only inside its
    /// deadline. A slow load or a compilation goes on in the background and
    /// serves the calls after; nothing is ever compiled inside a search.
    async fn prepared_for_call(&self, plugin: &PluginRef) -> Result<Arc<Prepared>, CallError> {
        if let Some(prepared) = self
            .inner
            .prepared
            .get(&(plugin.digest.clone(), plugin.world))
            .await
        {
            return Ok(prepared);
        }
        if let Some(failed) = self.inner.failed.get(&ready_key(plugin)).await {
            return Err(failed);
        }
        self.readying(plugin).await
    }

    /// Makes a version ready to call: from memory, its compiled file, or
    /// compiled from its stored component (bounded by `compile_timeout`).
    /// Activation and start-up call this, so searches find it ready; it
    /// retries a version that failed recently.
    pub async fn warm(&self, plugin: &PluginRef) -> Result<(), CallError> {
        if self
            .inner
            .prepared
            .contains_key(&(plugin.digest.clone(), plugin.world))
        {
            return Ok(());
        }
        self.inner.failed.invalidate(&ready_key(plugin)).await;
        self.readying(plugin).await.map(|_| ())
    }

    /// The one task that makes a version ready (loads its compiled file, or
    /// compiles it from its stored component), shared by every call and
    /// warm-up that wants it. It runs to its end whoever stops waiting, and
    /// keeps its result: the component in memory, or the failure for
    /// [`FAILED_RETRY`] (so a broken version costs one attempt, not one per
    /// search).
    fn readying(&self, plugin: &PluginRef) -> Readying {
        let key = ready_key(plugin);
        let mut readying = self.inner.readying.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(task) = readying.get(&key) {
            return task.clone();
        }
        let host = self.clone();
        let p = plugin.clone();
        let k = key.clone();
        let task = tokio::spawn(async move {
            let result = host.make_ready(&p).await.map(Arc::new);
            match &result {
                Ok(prepared) => {
                    let shared_key = (p.digest.clone(), p.world);
                    host.inner.prepared.insert(shared_key, prepared.clone()).await
                }
                Err(e) => {
                    tracing::warn!(
                        tenant = %p.tenant, plugin = %p.name, version = p.version,
                        error = %e, "plugins: cannot make a version ready; retrying later"
                    );
                    host.inner.failed.insert(k.clone(), e.clone()).await;
                }
            }
            host.inner
                .readying
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&k);
            result
        });
        let shared = async move {
            task.await
                .unwrap_or_else(|e| Err(CallError::Unavailable(format!("the loading task failed: {e}"))))
        }
        .boxed()
        .shared();
        readying.insert(key, shared.clone());
        shared
    }

    /// Loads a version's compiled file, else compiles it.
    async fn make_ready(&self, plugin: &PluginRef) -> Result<Prepared, CallError> {
        match self.load_compiled(plugin).await {
            Ok(prepared) => Ok(prepared),
            Err(Miss::Unusable(e)) => Err(e),
            Err(Miss::Absent(reason)) => self.compile_stored(plugin, reason).await,
        }
    }

    /// Loads a version's compiled file (deserialization only).
    async fn load_compiled(&self, plugin: &PluginRef) -> Result<Prepared, Miss> {
        let host = self.clone();
        let p = plugin.clone();
        tokio::task::spawn_blocking(move || match host.read_artifact(&p.digest) {
            Ok(c) => host
                .prepare(&c, p.world)
                .map_err(|e| Miss::Unusable(CallError::Unavailable(e))),
            Err(reason) => Err(Miss::Absent(reason)),
        })
        .await
        .map_err(|e| Miss::Unusable(CallError::Unavailable(e.to_string())))?
    }

    /// Compiles a version from its stored component, after checking the
    /// bytes against the digest.
    async fn compile_stored(&self, plugin: &PluginRef, reason: &'static str) -> Result<Prepared, CallError> {
        let bytes = self
            .inner
            .blobs
            .get(&blob_key(&plugin.tenant, &plugin.digest))
            .await
            .map_err(|e| CallError::Unavailable(format!("component blob: {e}")))?;
        if sha256_hex(&bytes) != plugin.digest {
            return Err(CallError::Unavailable(
                "the stored component does not match its digest".into(),
            ));
        }
        self.compile(&plugin.tenant, bytes, plugin.world, plugin.digest.clone(), reason)
            .await
            .map_err(|e| CallError::Unavailable(e.to_string()))
    }

    /// A fresh store for one call: memory cap, no grants, a cap on the
    /// bytes the guest may hand the host at once, and a deadline: running
    /// guest code yields to the executor at every tick and is interrupted
    /// at `end`.
    fn store(
        &self,
        plugin: &PluginRef,
        end: Instant,
        hostcall_bytes: usize,
        output: CallOutput,
    ) -> Result<Store<CallState>, CallError> {
        let config = &self.inner.config;
        let memory = plugin
            .memory_mb
            .map(|mb| mb.saturating_mul(MIB))
            .unwrap_or(config.memory_bytes)
            .min(config.max_memory_bytes);
        let wasi = WasiCtx::builder()
            .stdout(output.stdout.clone())
            .stderr(output.stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            // Random bytes are made synchronously, one by one: a large
            // request would hold the thread past the deadline.
            .max_random_size(MAX_RANDOM_BYTES)
            .build();
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCES);
        let mut store = Store::new(
            &self.inner.engine,
            CallState {
                wasi,
                table,
                limiter: Limiter {
                    memory_bytes: usize::try_from(memory).unwrap_or(usize::MAX),
                    hit_memory: false,
                },
                output,
            },
        );
        store.limiter(|s| &mut s.limiter);
        store
            .set_fuel(config.fuel)
            .map_err(|e| CallError::Unavailable(e.to_string()))?;
        store.set_hostcall_fuel(hostcall_bytes.max(MIN_HOSTCALL_BYTES));
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            Ok(if Instant::now() >= end {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Yield(1)
            })
        });
        Ok(store)
    }

    /// Runs one call under a tenant slot and a global slot, all of it
    /// (waiting for the slots included) inside the world's deadline, and
    /// records its outcome and time. At the deadline the call's future is
    /// dropped: the store, its instance and its slots go with it.
    async fn call<T, F, Fut>(&self, plugin: &PluginRef, hostcall_bytes: usize, f: F) -> Result<T, CallError>
    where
        F: FnOnce(Arc<Prepared>, Slot) -> Fut,
        Fut: Future<Output = (wasmtime::Result<Result<T, CallError>>, Slot)>,
    {
        const WAITING: u8 = 0;
        const LOADING: u8 = 1;
        const RUNNING: u8 = 2;
        let start = Instant::now();
        let deadline = self.inner.config.deadline(plugin.world);
        let end = start + deadline;
        let world = plugin.world.as_str();
        let output = CallOutput::new();
        let stage = AtomicU8::new(WAITING);
        let run = async {
            let tenant = self
                .inner
                .tenant_permits
                .get(&plugin.tenant, self.inner.config.max_concurrent_calls_per_tenant)
                .acquire_owned()
                .await
                .map_err(|_| CallError::Busy)?;
            let global = self
                .inner
                .permits
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| CallError::Busy)?;
            stage.store(LOADING, Ordering::Relaxed);
            let prepared = self.prepared_for_call(plugin).await?;
            let slot = Slot {
                store: self.store(plugin, end, hostcall_bytes, output.clone())?,
                _permits: [global, tenant],
            };
            stage.store(RUNNING, Ordering::Relaxed);
            let _ticking = self.inner.ticker.running();
            let (outcome, slot) = f(prepared, slot).await;
            match outcome {
                Ok(r) => r,
                Err(e) => Err(classify(&slot.store, &output, e, deadline)),
            }
        };
        let mut closing = self.inner.closing.subscribe();
        let result = tokio::select! {
            result = tokio::time::timeout_at(end.into(), run) => match result {
                Ok(result) => result,
                Err(_) => Err(match stage.load(Ordering::Relaxed) {
                    WAITING => CallError::Busy,
                    LOADING => CallError::NotReady,
                    _ => CallError::Timeout(deadline.as_millis() as u64),
                }),
            },
            _ = closing.wait_for(|closing| *closing) => {
                Err(CallError::Unavailable("the server is shutting down".into()))
            }
        };
        report_output(plugin, &output);
        metrics::histogram!(PLUGIN_CALL_DURATION, "world" => world).record(start.elapsed().as_secs_f64());
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.kind(),
        };
        metrics::counter!(PLUGIN_CALLS, "world" => world, "outcome" => outcome).increment(1);
        if let Err(e) = &result {
            tracing::warn!(
                tenant = %plugin.tenant, plugin = %plugin.name, version = plugin.version,
                world, error = %e, "plugin call failed; falling back"
            );
        }
        result
    }

    /// Runs a filter plugin; returns the ids it keeps (each one of the
    /// candidates'). Its output may hold at most the candidates' ids.
    pub async fn filter(
        &self,
        plugin: &PluginRef,
        query: Query,
        candidates: Vec<Candidate>,
    ) -> Result<HashSet<String>, CallError> {
        let bytes = candidates.iter().map(|c| c.id.len() + LIST_ENTRY_BYTES).sum();
        self.call(plugin, bytes, move |prepared, mut slot| async move {
            let outcome: wasmtime::Result<Result<HashSet<String>, CallError>> = async {
                let Prepared::Filter(pre) = &*prepared else {
                    return Ok(Err(CallError::Unavailable("not a filter".into())));
                };
                let instance = pre.instantiate_async(&mut slot.store).await?;
                let kept = instance.call_filter(&mut slot.store, &query, &candidates).await?;
                let known: HashSet<&str> = candidates.iter().map(|c| c.id.as_str()).collect();
                if let Some(unknown) = kept.iter().find(|id| !known.contains(id.as_str())) {
                    return Ok(Err(CallError::BadOutput(format!(
                        "it kept `{}`, which is not one of the candidates",
                        truncate(unknown, 64)
                    ))));
                }
                Ok(Ok(kept.into_iter().collect()))
            }
            .await;
            (outcome, slot)
        })
        .await
    }

    /// Runs a ranker plugin; returns one finite score per candidate.
    pub async fn rank(
        &self,
        plugin: &PluginRef,
        query: Query,
        candidates: Vec<Candidate>,
    ) -> Result<Vec<f32>, CallError> {
        let bytes = candidates.len() * std::mem::size_of::<f32>();
        self.call(plugin, bytes, move |prepared, mut slot| async move {
            let outcome: wasmtime::Result<Result<Vec<f32>, CallError>> = async {
                let Prepared::Ranker(pre) = &*prepared else {
                    return Ok(Err(CallError::Unavailable("not a ranker".into())));
                };
                let instance = pre.instantiate_async(&mut slot.store).await?;
                let scores = instance.call_rank(&mut slot.store, &query, &candidates).await?;
                if scores.len() != candidates.len() {
                    return Ok(Err(CallError::BadOutput(format!(
                        "it returned {} scores for {} candidates",
                        scores.len(),
                        candidates.len()
                    ))));
                }
                if let Some(i) = scores.iter().position(|s| !s.is_finite()) {
                    return Ok(Err(CallError::BadOutput(format!(
                        "score {i} is {}, not a finite number",
                        scores[i]
                    ))));
                }
                Ok(Ok(scores))
            }
            .await;
            (outcome, slot)
        })
        .await
    }

    /// Runs an ingest plugin: `Ok(Ok(t))` with its output turned into `t`
    /// by `accept`, `Ok(Err(msg))` when the plugin rejects the product.
    /// Output `accept` refuses is a `BadOutput` failure.
    pub async fn ingest<T, A>(
        &self,
        plugin: &PluginRef,
        product: PluginProduct,
        accept: A,
    ) -> Result<Result<T, String>, CallError>
    where
        A: FnOnce(PluginProduct) -> Result<T, String>,
    {
        let params = plugin.params.clone();
        self.call(
            plugin,
            INGEST_OUTPUT_BYTES,
            move |prepared, mut slot| async move {
                let outcome: wasmtime::Result<Result<Result<T, String>, CallError>> = async {
                    let Prepared::Ingest(pre) = &*prepared else {
                        return Ok(Err(CallError::Unavailable("not an ingest plugin".into())));
                    };
                    let instance = pre.instantiate_async(&mut slot.store).await?;
                    Ok(
                        match instance
                            .call_transform(&mut slot.store, &product, &params)
                            .await?
                        {
                            Ok(out) => match accept(out) {
                                Ok(t) => Ok(Ok(t)),
                                Err(why) => Err(CallError::BadOutput(why)),
                            },
                            Err(message) => Ok(Err(truncate(&message, 1000))),
                        },
                    )
                }
                .await;
                (outcome, slot)
            },
        )
        .await
    }
}

/// How long a version that failed to get ready is left alone before a
/// call tries again.
const FAILED_RETRY: Duration = Duration::from_secs(30);

/// (tenant, digest, world): what a readying task and a remembered failure
/// belong to.
type ReadyKey = (String, String, World);

fn ready_key(plugin: &PluginRef) -> ReadyKey {
    (plugin.tenant.clone(), plugin.digest.clone(), plugin.world)
}

/// A version being made ready, as every waiter sees it.
type Readying = Shared<BoxFuture<'static, Result<Arc<Prepared>, CallError>>>;

/// One semaphore per tenant, made on first use. Tenants are created by the
/// admin only, so the map stays as small as the tenant list.
#[derive(Default)]
struct TenantSlots(Mutex<HashMap<String, Arc<Semaphore>>>);

impl TenantSlots {
    fn get(&self, tenant: &str, permits: usize) -> Arc<Semaphore> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(tenant.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(permits.max(1))))
            .clone()
    }
}

/// Hostcall bytes per id a filter may return, beyond the id itself (the
/// list entry the host allocates for it).
const LIST_ENTRY_BYTES: usize = 64;

/// A running call's store and the slots it holds. Fields drop in order:
/// the instance is gone before its slots free up, so a freed slot always
/// finds a free pooled instance.
struct Slot {
    store: Store<CallState>,
    _permits: [OwnedSemaphorePermit; 2],
}

/// Why a version's compiled file did not serve.
enum Miss {
    /// Missing or damaged (the label of the compilation it calls for).
    Absent(&'static str),
    /// Loaded, but cannot be used.
    Unusable(CallError),
}

/// Why a compilation failed.
#[derive(Debug, thiserror::Error)]
enum CompileFailure {
    #[error("the component is invalid: {0}")]
    Invalid(String),
    #[error("the component does not implement its world: {0}")]
    WrongWorld(String),
    #[error("compilation took longer than the limit")]
    TimedOut,
    #[error("no compile slot freed up in time")]
    Busy,
    #[error("{0}")]
    Internal(String),
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// Guest text with its control characters escaped (`\n`, `\u{1b}`), so
/// that it cannot forge log lines or terminal sequences.
fn escape_controls(s: &str) -> String {
    s.chars().fold(String::with_capacity(s.len()), |mut out, c| {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
        out
    })
}

/// Sends what the guest logged and printed to the service log, tagged with
/// the tenant and plugin, and counts the log lines dropped.
fn report_output(plugin: &PluginRef, output: &CallOutput) {
    let (tenant, name) = (plugin.tenant.as_str(), plugin.name.as_str());
    let log = std::mem::take(&mut *output.log());
    for (level, line) in &log.lines {
        let line = escape_controls(line);
        match level {
            Level::Debug => tracing::debug!(tenant, plugin = name, "plugin: {line}"),
            Level::Info => tracing::info!(tenant, plugin = name, "plugin: {line}"),
            Level::Warn => tracing::warn!(tenant, plugin = name, "plugin: {line}"),
            Level::Error => tracing::error!(tenant, plugin = name, "plugin: {line}"),
        }
    }
    let dropped = log.dropped + log.calls.saturating_sub(MAX_LOG_CALLS);
    if dropped > 0 {
        metrics::counter!(PLUGIN_LOG_DROPPED).increment(dropped as u64);
    }
    for (stream, pipe) in [("stdout", &output.stdout), ("stderr", &output.stderr)] {
        let bytes = pipe.contents();
        let text = String::from_utf8_lossy(&bytes);
        let text = text.trim();
        if !text.is_empty() {
            tracing::warn!(
                tenant,
                plugin = name,
                version = plugin.version,
                stream,
                output = %escape_controls(&truncate(text, OUTPUT_CAP)),
                "plugin wrote to {stream}"
            );
        }
    }
}

/// Names what stopped a guest.
fn classify(
    store: &Store<CallState>,
    output: &CallOutput,
    error: wasmtime::Error,
    deadline: Duration,
) -> CallError {
    if output.log().flooded {
        return CallError::LogFlood;
    }
    let limiter = &store.data().limiter;
    if limiter.hit_memory {
        return CallError::MemoryLimit(limiter.memory_bytes as u64 / MIB);
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => CallError::Timeout(deadline.as_millis() as u64),
        Some(Trap::OutOfFuel) => CallError::OutOfFuel,
        Some(Trap::StackOverflow) => CallError::StackOverflow,
        Some(trap) => CallError::Trap(trap.to_string()),
        // Not a trap: the host refused what the guest handed it (more
        // bytes than its hostcall budget, a bad string or pointer).
        None => CallError::BadOutput(truncate(&format!("{error:#}"), 300)),
    }
}

#[cfg(test)]
mod tests;
