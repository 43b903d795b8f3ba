//! Choosing the compute backend at run time.
//!
//! `auto` picks wgpu only when a real GPU adapter exists (discrete, integrated
//! or virtual); a software adapter such as Mesa's lavapipe does not count,
//! because burn's CPU backend (`flex`) is far faster than a GPU emulated on the
//! same cores. The CPU backend is first-class, not a fallback: on boards like a
//! Raspberry Pi 5 the CPU beats the GPU for decoding.

use crate::error::{ModelError, Result};
use burn::tensor::{Device, DeviceKind};
use std::str::FromStr;

/// Which backend to run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendKind {
    /// A real GPU through wgpu if one is present, else the CPU.
    #[default]
    Auto,
    /// burn's `flex` CPU backend.
    Cpu,
    /// wgpu (Vulkan/Metal/DX12), including software adapters like lavapipe.
    Wgpu,
}

impl FromStr for BackendKind {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Self::Auto),
            "cpu" | "flex" => Ok(Self::Cpu),
            "wgpu" | "gpu" => Ok(Self::Wgpu),
            other => Err(ModelError::InvalidRequest(format!(
                "unknown backend `{other}` (expected auto, cpu or wgpu)"
            ))),
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Cpu => "cpu",
            Self::Wgpu => "wgpu",
        })
    }
}

/// A device ready for models, with what was chosen and why.
#[derive(Debug, Clone)]
pub struct OpenedDevice {
    /// The burn device to create models and tensors on.
    pub device: Device,
    /// The backend actually used (`Auto` resolved).
    pub kind: BackendKind,
    /// Human-readable adapter description, for logs and `describe`.
    pub description: String,
}

/// One wgpu adapter as the system reports it.
#[derive(Debug, Clone)]
pub struct AdapterSummary {
    /// Adapter name, e.g. "llvmpipe (LLVM 15.0.6, 256 bits)".
    pub name: String,
    /// Graphics API (Vulkan, Metal, ...).
    pub backend: String,
    /// Discrete/integrated/virtual GPU or CPU (software).
    pub device_type: String,
    /// Whether this is real GPU hardware.
    pub is_hardware: bool,
    /// The largest storage buffer one shader may bind, in bytes.
    pub max_binding: u64,
    /// The largest buffer the adapter can allocate, in bytes.
    pub max_buffer: u64,
}

impl AdapterSummary {
    /// The most bytes one tensor may occupy here: burn's memory pool never
    /// makes a page larger than either limit.
    pub fn max_tensor_bytes(&self) -> u64 {
        self.max_binding.min(self.max_buffer)
    }
}

/// Lists the adapters wgpu can see.
pub fn wgpu_adapters() -> Vec<AdapterSummary> {
    use burn::tensor::wgpu::wgpu;
    let instance = wgpu::Instance::default();
    let adapters =
        futures_lite::future::block_on(instance.enumerate_adapters(wgpu::Backends::PRIMARY));
    adapters
        .iter()
        .map(|a| {
            let info = a.get_info();
            let limits = a.limits();
            AdapterSummary {
                max_binding: limits.max_storage_buffer_binding_size,
                max_buffer: limits.max_buffer_size,
                name: info.name.clone(),
                backend: format!("{:?}", info.backend),
                device_type: format!("{:?}", info.device_type),
                is_hardware: matches!(
                    info.device_type,
                    wgpu::DeviceType::DiscreteGpu
                        | wgpu::DeviceType::IntegratedGpu
                        | wgpu::DeviceType::VirtualGpu
                ),
            }
        })
        .collect()
}

/// The most bytes one tensor may occupy on `device`, or `None` where
/// nothing limits it (the CPU). Loaders cut larger matrices into pieces.
///
/// Taken as the smallest over every adapter wgpu lists, since burn's
/// default-device choice is not exposed: a smaller limit than needed only
/// means more pieces.
pub fn max_tensor_bytes(device: &Device) -> Option<u64> {
    static LIMIT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    if *device == Device::flex() {
        return None;
    }
    Some(*LIMIT.get_or_init(|| {
        wgpu_adapters()
            .iter()
            .map(AdapterSummary::max_tensor_bytes)
            .min()
            // wgpu's own default limit, should listing find nothing.
            .unwrap_or(128 << 20)
    }))
}

/// Where burn keeps what it learnt about this machine's GPU kernels
/// (autotune results) between runs: `$XDG_CACHE_HOME/seer/kernels`, else
/// `~/.cache/seer/kernels`. A second start then runs no autotune candidates.
pub fn kernel_cache_dir() -> Option<std::path::PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cache")))?;
    Some(base.join("seer").join("kernels"))
}

/// Points burn's kernel cache at [`kernel_cache_dir`], once, before the
/// first GPU kernel runs. A directory that cannot be made leaves the cache in
/// memory, with a warning: the model still runs, only the next start tunes
/// again.
fn use_kernel_cache() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| match kernel_cache_dir() {
        Some(dir) => match std::fs::create_dir_all(&dir) {
            Ok(()) => {
                tracing::info!(dir = %dir.display(), "GPU kernel cache");
                // cubecl points the cache at its own default when it first
                // reads its configuration, so read it first, then move it.
                use burn::cubecl::config::{CubeClRuntimeConfig, RuntimeConfig};
                let _ = CubeClRuntimeConfig::get();
                burn::cubecl::environment::set_root(dir);
            }
            Err(e) => tracing::warn!(
                dir = %dir.display(),
                "cannot create the GPU kernel cache ({e}); kernels will be tuned again next start"
            ),
        },
        None => tracing::warn!(
            "neither XDG_CACHE_HOME nor HOME is set: the GPU kernel cache stays in memory"
        ),
    });
}

/// Opens the requested backend and logs the choice.
pub fn open(kind: BackendKind) -> Result<OpenedDevice> {
    let resolved = match kind {
        BackendKind::Auto => {
            let adapters = wgpu_adapters();
            if adapters.iter().any(|a| a.is_hardware) {
                BackendKind::Wgpu
            } else {
                tracing::info!(
                    adapters = adapters.len(),
                    "no hardware GPU adapter found; using the CPU backend"
                );
                BackendKind::Cpu
            }
        }
        k => k,
    };
    let opened = match resolved {
        BackendKind::Cpu => OpenedDevice {
            device: Device::flex(),
            kind: BackendKind::Cpu,
            description: format!("cpu (burn flex, {} threads)", rayon::current_num_threads()),
        },
        _ => {
            let adapters = wgpu_adapters();
            if adapters.is_empty() {
                return Err(ModelError::Backend(
                    "wgpu found no adapter: install a Vulkan driver (on Debian: libvulkan1 and mesa-vulkan-drivers)"
                        .into(),
                ));
            }
            // wgpu's default selector prefers high-power hardware; name what it
            // will most likely pick so the log is useful.
            let best = adapters
                .iter()
                .find(|a| a.is_hardware)
                .unwrap_or(&adapters[0]);
            use_kernel_cache();
            OpenedDevice {
                device: Device::wgpu(DeviceKind::DefaultDevice),
                kind: BackendKind::Wgpu,
                description: format!(
                    "wgpu: {} ({}, {})",
                    best.name, best.backend, best.device_type
                ),
            }
        }
    };
    tracing::info!(requested = %kind, backend = %opened.kind, adapter = %opened.description, "compute device chosen");
    Ok(opened)
}

/// Sets the CPU backend's thread count. Must run before the first CPU tensor
/// operation; later calls are ignored with a warning (rayon's pool is global).
pub fn set_cpu_threads(n: usize) {
    if let Err(e) = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
    {
        tracing::warn!("cannot set CPU threads to {n}: {e}");
    }
}
