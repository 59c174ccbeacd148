//! CUDA plumbing: locating the CUDA libraries and headers, NVRTC compilation of kernel sources to CUBIN (cached
//! on disk by a hash of source, options and NVRTC version), and [`Gpu`], one context and stream per device with
//! its loaded modules.
//!
//! Nothing here panics when CUDA is missing: every entry point first probes the library it needs and returns
//! [`KernelError::Unavailable`] naming what was looked for and where.

pub mod cubin;
pub mod graph;
pub mod order;
pub mod trace;

pub use cubin::{all_sources, cubin_key, source_hash, CubinSet};

use crate::{KernelError, Result};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DeviceRepr, ValidAsZeroBits,
};
use cudarc::nvrtc::{result as nvrtc_result, sys as nvrtc_sys};
use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// A kernel source file, embedded in the binary.
#[derive(Clone, Copy, Debug)]
pub struct Source {
    /// File name, used as the NVRTC program name so errors point at it.
    pub file: &'static str,
    /// The CUDA C++ text.
    pub code: &'static str,
}

/// Helpers prepended to every kernel source (reductions, bf16/f16 conversions).
pub const COMMON: &str = include_str!("common.cuh");

/// Directories that may hold a CUDA installation, in search order: `$CHEEMS_CUDA_HOME`, `$CUDA_HOME`,
/// `$CUDA_PATH`, `/usr/local/cuda`, `/usr/local/cuda-13.0`, and the pip wheels' `nvidia/cu13` folder named by
/// `$CHEEMS_NVIDIA_WHEELS`.
pub fn cuda_roots() -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> =
        ["CHEEMS_CUDA_HOME", "CUDA_HOME", "CUDA_PATH", "CHEEMS_NVIDIA_WHEELS"]
            .iter()
            .filter_map(|v| std::env::var_os(v).map(PathBuf::from))
            .collect();
    roots.extend(["/usr/local/cuda", "/usr/local/cuda-13.0"].map(PathBuf::from));
    roots.dedup();
    roots
}

fn lib_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for r in cuda_roots() {
        for sub in ["lib64", "lib", "targets/x86_64-linux/lib"] {
            let d = r.join(sub);
            if d.is_dir() {
                dirs.push(d);
            }
        }
    }
    dirs
}

/// Folders passed to NVRTC with `-I` (the toolkit's headers, for `cuda_bf16.h` and friends).
pub fn include_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> =
        std::env::var_os("CUDA_INCLUDE").map(PathBuf::from).into_iter().collect();
    for r in cuda_roots() {
        for sub in ["include", "targets/x86_64-linux/include"] {
            let d = r.join(sub);
            if d.join("cuda_fp16.h").is_file() {
                dirs.push(d);
            }
        }
    }
    dirs.dedup();
    dirs
}

/// Loads `soname` by absolute path from the first CUDA library folder that has it, so that cudarc's later
/// lookup by soname finds it already loaded. Returns the folders searched when none has it.
fn preload(soname: &str) -> std::result::Result<PathBuf, Vec<PathBuf>> {
    static LOADED: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let loaded = LOADED.get_or_init(Default::default);
    let mut map = loaded.lock().expect("preload lock is never poisoned by a panic");
    if let Some(p) = map.get(soname) {
        return Ok(p.clone());
    }
    let dirs = lib_dirs();
    for d in &dirs {
        let path = d.join(soname);
        if !path.is_file() {
            continue;
        }
        // SAFETY: loading a CUDA library runs its initialisers only; the handle is kept for the process's life so
        // its symbols stay valid for cudarc, which opens the same library by soname.
        let lib = unsafe {
            libloading::os::unix::Library::open(
                Some(&path),
                libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_GLOBAL,
            )
        };
        if let Ok(lib) = lib {
            std::mem::forget(lib);
            map.insert(soname.to_string(), path.clone());
            return Ok(path);
        }
    }
    Err(dirs)
}

fn unavailable(what: &str, soname: &str, searched: &[PathBuf]) -> KernelError {
    let dirs: Vec<String> = if searched.is_empty() {
        cuda_roots().iter().map(|d| format!("{} (absent)", d.display())).collect()
    } else {
        searched.iter().map(|d| d.display().to_string()).collect()
    };
    KernelError::Unavailable(format!(
        "{what}: `{soname}` was not found on the loader path nor in [{}] (set CHEEMS_CUDA_HOME or CUDA_HOME to the \
         CUDA installation, or add its lib folder to LD_LIBRARY_PATH)",
        dirs.join(", ")
    ))
}

/// Makes NVRTC loadable, or says what was looked for.
pub fn probe_nvrtc() -> Result<()> {
    let searched = preload("libnvrtc.so.13").err().unwrap_or_default();
    let _ = preload("libnvrtc-builtins.so.13.0");
    // SAFETY: `is_culib_present` only tries to dlopen the library by its candidate names.
    if unsafe { nvrtc_sys::is_culib_present() } {
        Ok(())
    } else {
        Err(unavailable("NVRTC (the CUDA runtime compiler)", "libnvrtc.so.13", &searched))
    }
}

/// Makes the CUDA driver loadable, or says what was looked for.
pub fn probe_driver() -> Result<()> {
    let searched = preload("libcuda.so.1").err().unwrap_or_default();
    // SAFETY: `is_culib_present` only tries to dlopen the library by its candidate names.
    if unsafe { cudarc::driver::sys::is_culib_present() } {
        Ok(())
    } else {
        Err(unavailable("the CUDA driver", "libcuda.so.1", &searched))
    }
}

/// Makes cuBLAS loadable, or says what was looked for.
pub fn probe_cublas() -> Result<()> {
    let searched = preload("libcublas.so.13").err().unwrap_or_default();
    let _ = preload("libcublasLt.so.13");
    // SAFETY: `is_culib_present` only tries to dlopen the library by its candidate names.
    if unsafe { cudarc::cublas::sys::is_culib_present() } {
        Ok(())
    } else {
        Err(unavailable("cuBLAS", "libcublas.so.13", &searched))
    }
}

/// NVRTC's version as `(major, minor)`.
pub fn nvrtc_version() -> Result<(i32, i32)> {
    probe_nvrtc()?;
    let (mut major, mut minor) = (0, 0);
    // SAFETY: NVRTC writes two ints through the valid pointers.
    let r = unsafe { nvrtc_sys::nvrtcVersion(&mut major, &mut minor) };
    r.result().map_err(|e| KernelError::Driver(format!("nvrtcVersion: {e:?}")))?;
    Ok((major, minor))
}

/// Whether the architecture `arch` (`sm_90`, `sm_90a`, `sm_100`) is sm_90 or later: thread-block clusters and
/// programmatic dependent launches.
pub(crate) fn sm90_or_later(arch: &str) -> bool {
    arch.strip_prefix("sm_")
        .and_then(|v| v.trim_end_matches(char::is_alphabetic).parse::<u32>().ok())
        .is_some_and(|v| v >= 90)
}

/// The compile options for `arch` (e.g. `sm_90`). sm_90 compiles as sm_90a: the same devices, with the
/// warpgroup instructions (`wgmma`) that only sm_90 has.
fn options(arch: &str) -> Vec<String> {
    let target = if arch == "sm_90" { "sm_90a" } else { arch };
    let mut o = vec![
        format!("--gpu-architecture={target}"),
        "--std=c++17".to_string(),
        "-default-device".to_string(),
    ];
    o.extend(include_dirs().iter().map(|d| format!("-I{}", d.display())));
    o
}

/// [`options`], with `CHEEMS_TRACE` defined for a traced device ([`trace`]).
fn options_traced(arch: &str, traced: bool) -> Vec<String> {
    let mut o = options(arch);
    if traced {
        o.push("-DCHEEMS_TRACE=1".to_string());
    }
    o
}

/// The NVRTC options used for `arch`, include folders (`-I`) included.
pub fn nvrtc_options(arch: &str) -> Vec<String> {
    options(arch)
}

/// The full text NVRTC compiles: the common header, then the source with its line numbers kept.
fn full_source(src: &Source) -> String {
    format!("{COMMON}\n#line 1 \"{}\"\n{}", src.file, src.code)
}

fn cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("CHEEMS_KERNEL_CACHE") {
        return Some(PathBuf::from(d));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/cheems/kernels"))
}

/// Compiles `src` for `arch` to CUBIN, through the disk cache (`$CHEEMS_KERNEL_CACHE`, else
/// `~/.cache/cheems/kernels`) keyed by source, options and NVRTC version. A compile error carries NVRTC's log.
pub fn compile_cubin(src: &Source, arch: &str) -> Result<Vec<u8>> {
    compile_cubin_traced(src, arch, false)
}

/// [`compile_cubin`], with the kernels recording a trace when `traced` ([`trace`]).
pub fn compile_cubin_traced(src: &Source, arch: &str, traced: bool) -> Result<Vec<u8>> {
    let version = nvrtc_version()?;
    let opts = options_traced(arch, traced);
    let text = full_source(src);
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (&text, &opts, version).hash(&mut h);
    let key = format!("{}-{arch}-{:016x}.cubin", src.file.trim_end_matches(".cu"), h.finish());
    let cached = cache_dir().map(|d| d.join(&key));
    if let Some(bytes) = cached.as_deref().and_then(|p| std::fs::read(p).ok()) {
        return Ok(bytes);
    }
    let cubin = nvrtc_compile(src.file, &text, &opts)?;
    if let Some(path) = cached {
        store(&path, &cubin);
    }
    Ok(cubin)
}

/// Best-effort cache write through a temporary file and a rename; a failure only costs a recompile later.
fn store(path: &Path, bytes: &[u8]) {
    let Some(dir) = path.parent() else { return };
    if std::fs::create_dir_all(dir).is_err() {
        return;
    }
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    if std::fs::write(&tmp, bytes).is_ok() && std::fs::rename(&tmp, path).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

fn nvrtc_compile(file: &str, text: &str, opts: &[String]) -> Result<Vec<u8>> {
    // SAFETY: `with_compiled` hands over a live, compiled program.
    with_compiled(file, text, opts, |prog| unsafe { cubin_of(prog, file) })
}

/// ptxas's report (`-v`: registers, spills, and its performance advisories) on `src` compiled for `arch`.
#[cfg(test)]
pub(crate) fn ptxas_report(src: &Source, arch: &str) -> Result<String> {
    let mut opts = options(arch);
    opts.push("--ptxas-options=-v".to_string());
    // SAFETY: `with_compiled` hands over a live, compiled program.
    with_compiled(src.file, &full_source(src), &opts, |prog| {
        unsafe { program_log(prog) }
            .map_err(|e| KernelError::Driver(format!("nvrtcGetProgramLog({}): {e}", src.file)))
    })
}

/// Creates an NVRTC program of `text` (named `file`), compiles it with `opts` and returns what `read` takes from
/// the compiled program, which is destroyed after. A compile error carries NVRTC's log.
fn with_compiled<R>(
    file: &str,
    text: &str,
    opts: &[String],
    read: impl FnOnce(nvrtc_sys::nvrtcProgram) -> Result<R>,
) -> Result<R> {
    let bad = |what: &str| KernelError::Compile {
        file: file.to_string(),
        log: format!("{what} contains a NUL byte"),
    };
    let code = CString::new(text).map_err(|_| bad("the source"))?;
    let name = CString::new(file).map_err(|_| bad("the file name"))?;
    let prog = nvrtc_result::create_program(&code, Some(&name))
        .map_err(|e| KernelError::Driver(format!("nvrtcCreateProgram({file}): {e:?}")))?;
    // SAFETY: `prog` is a live program; the options are plain strings; NVRTC sizes the log buffer itself.
    let out = unsafe { nvrtc_result::compile_program(prog, opts) };
    let out = match out {
        Ok(()) => read(prog),
        Err(e) => {
            // SAFETY: `prog` is live until it is destroyed below.
            let log = unsafe { program_log(prog) }.unwrap_or_else(|_| format!("{e:?} (no log)"));
            Err(KernelError::Compile { file: file.to_string(), log })
        }
    };
    // SAFETY: `prog` was created above and is not used after this call.
    let _ = unsafe { nvrtc_result::destroy_program(prog) };
    out
}

/// # Safety
/// `prog` must be a live NVRTC program.
unsafe fn program_log(prog: nvrtc_sys::nvrtcProgram) -> Result<String> {
    nvrtc_result::get_program_log(prog)
        .map(|l| CStr::from_ptr(l.as_ptr()).to_string_lossy().into_owned())
        .map_err(|e| KernelError::Driver(format!("{e:?}")))
}

/// # Safety
/// `prog` must be a live, compiled NVRTC program.
unsafe fn cubin_of(prog: nvrtc_sys::nvrtcProgram, file: &str) -> Result<Vec<u8>> {
    let mut size = 0usize;
    nvrtc_sys::nvrtcGetCUBINSize(prog, &mut size)
        .result()
        .map_err(|e| KernelError::Driver(format!("nvrtcGetCUBINSize({file}): {e:?}")))?;
    let mut buf = vec![0u8; size];
    nvrtc_sys::nvrtcGetCUBIN(prog, buf.as_mut_ptr().cast())
        .result()
        .map_err(|e| KernelError::Driver(format!("nvrtcGetCUBIN({file}): {e:?}")))?;
    Ok(buf)
}

/// One CUDA device: context, stream, and the modules compiled for it.
///
/// Every launch, copy and allocation goes to the one stream of the `Gpu` (a non-blocking stream, so that it
/// can be captured into a CUDA graph), which is why cudarc's per-buffer event tracking is switched off: with a
/// single stream, stream order alone orders every access.
pub struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    arch: String,
    cubins: CubinSet,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    functions: Mutex<HashMap<&'static str, HashMap<String, CudaFunction>>>,
    blas: OnceLock<Mutex<cudarc::cublas::CudaBlas>>,
    poison: bool,
    spare: Mutex<HashMap<usize, Vec<cudarc::driver::sys::CUdeviceptr>>>,
    graph_pool: Mutex<Option<GraphPool>>,
    multiprocessors: usize,
    trace: Option<trace::Trace>,
}

/// The buffers of one recorded graph while it is being built: handed out by [`Gpu::uninit`] and taken back by
/// [`Gpu::recycle`] (any size), so that the recorded kernels address memory that nothing else reuses.
#[derive(Default)]
struct GraphPool {
    spare: HashMap<usize, Vec<cudarc::driver::sys::CUdeviceptr>>,
    sealed: bool,
    /// The buffers handed out since the pool was sealed or [`Gpu::take_handed_out`] last took them.
    handed: Vec<order::Span>,
}

/// The device memory a recorded graph's kernels address (the graph pool's buffers when it was closed); freed on
/// drop, which must come after the graph's last launch has been issued.
pub struct GraphBuffers {
    ptrs: Vec<(cudarc::driver::sys::CUdeviceptr, usize)>,
    stream: Arc<CudaStream>,
}

impl GraphBuffers {
    /// Total bytes held.
    pub fn bytes(&self) -> usize {
        self.ptrs.iter().map(|p| p.1).sum()
    }
}

impl Drop for GraphBuffers {
    fn drop(&mut self) {
        for (ptr, _) in self.ptrs.drain(..) {
            // SAFETY: each pointer is a live allocation of this stream's context that the pool alone owned; it is
            // freed once, in stream order after the graph launches that use it.
            let _ = unsafe { cudarc::driver::result::free_async(ptr, self.stream.cu_stream()) };
        }
    }
}

/// Buffers of at most this many bytes are kept for reuse by [`Gpu::recycle`].
pub const SPARE_MAX_BYTES: usize = 1 << 20;
/// At most this many spare buffers are kept per size.
const SPARE_PER_SIZE: usize = 64;

impl Drop for Gpu {
    fn drop(&mut self) {
        if let Ok(spare) = self.spare.get_mut() {
            for ptr in spare.drain().flat_map(|(_, v)| v) {
                // SAFETY: each pointer is a live allocation of this context handed over by `recycle`, owned by
                // the pool alone; it is freed once, in stream order.
                let _ = unsafe { cudarc::driver::result::free_async(ptr, self.stream.cu_stream()) };
            }
        }
        let _ = self.stream.synchronize();
    }
}

impl Gpu {
    /// Opens device `ordinal`, after probing the driver and NVRTC.
    pub fn new(ordinal: usize) -> Result<Gpu> {
        probe_nvrtc()?;
        Gpu::with_cubins(ordinal, CubinSet::default())
    }

    /// Opens device `ordinal` with precompiled CUBINs (a compiled artifact's): a kernel source with a CUBIN in
    /// `cubins` for this device's architecture is loaded from it; any other is compiled with NVRTC on first use,
    /// which must then be available. Only the driver is probed here. With `CHEEMS_CUDA_TRACE=1` the device records
    /// a kernel trace ([`trace`]), its kernels compiled anew with NVRTC.
    pub fn with_cubins(ordinal: usize, cubins: CubinSet) -> Result<Gpu> {
        let traced = std::env::var_os("CHEEMS_CUDA_TRACE").is_some_and(|v| v != "0");
        if traced {
            probe_nvrtc()?;
        }
        Gpu::open(ordinal, cubins, traced)
    }

    fn open(ordinal: usize, cubins: CubinSet, traced: bool) -> Result<Gpu> {
        probe_driver()?;
        let ctx = CudaContext::new(ordinal)
            .map_err(|e| KernelError::Driver(format!("opening device {ordinal}: {e}")))?;
        let (major, minor) = ctx
            .compute_capability()
            .map_err(|e| KernelError::Driver(format!("compute capability: {e}")))?;
        // SAFETY: every buffer of this context is allocated, used and freed on the single stream below (the
        // cuBLAS handle is bound to it too), so stream order replaces the per-buffer events.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().map_err(|e| {
            KernelError::Driver(format!("creating a stream on device {ordinal}: {e}"))
        })?;
        let multiprocessors = ctx
            .attribute(
                cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
            )
            .map_err(|e| KernelError::Driver(format!("multiprocessor count: {e}")))?;
        let trace = traced.then(|| trace::Trace::new(&stream, trace::RECORDS)).transpose()?;
        Ok(Gpu {
            ctx,
            stream,
            arch: format!("sm_{major}{minor}"),
            cubins,
            modules: Mutex::new(HashMap::new()),
            functions: Mutex::new(HashMap::new()),
            blas: OnceLock::new(),
            poison: std::env::var_os("CHEEMS_CUDA_POISON").is_some_and(|v| v != "0"),
            spare: Mutex::new(HashMap::new()),
            graph_pool: Mutex::new(None),
            multiprocessors: multiprocessors.max(1) as usize,
            trace,
        })
    }

    /// The device's multiprocessor count.
    pub fn multiprocessors(&self) -> usize {
        self.multiprocessors
    }

    /// The device's architecture name (`sm_90`).
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// The device's context.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The stream every launch of this crate goes to.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// The kernel `name` of `src`, compiling and loading the module on first use.
    pub fn function(&self, src: &Source, name: &str) -> Result<CudaFunction> {
        let cached = self.functions.lock().ok().and_then(|m| m.get(src.file)?.get(name).cloned());
        if let Some(f) = cached {
            return Ok(f);
        }
        let module = {
            let mut modules = self
                .modules
                .lock()
                .map_err(|_| KernelError::Driver("module cache poisoned".into()))?;
            match modules.get(src.file) {
                Some(m) => m.clone(),
                None => {
                    let cubin = match (&self.trace, self.cubins.get(src, &self.arch)) {
                        (None, Some(c)) => c.to_vec(),
                        _ => compile_cubin_traced(src, &self.arch, self.trace.is_some())?,
                    };
                    let m = self
                        .ctx
                        .load_module(cudarc::nvrtc::Ptx::from_binary(cubin))
                        .map_err(|e| KernelError::Driver(format!("loading {}: {e}", src.file)))?;
                    if let Some(t) = &self.trace {
                        t.attach(&m, src.file, &self.stream)?;
                    }
                    modules.insert(src.file, m.clone());
                    m
                }
            }
        };
        let f = module
            .load_function(name)
            .map_err(|e| KernelError::Driver(format!("{}: kernel `{name}`: {e}", src.file)))?;
        if let Ok(mut m) = self.functions.lock() {
            m.entry(src.file).or_default().insert(name.to_string(), f.clone());
        }
        Ok(f)
    }

    /// The cuBLAS handle bound to this device's stream, created on first use.
    pub fn blas(&self) -> Result<std::sync::MutexGuard<'_, cudarc::cublas::CudaBlas>> {
        if self.blas.get().is_none() {
            probe_cublas()?;
            let b = cudarc::cublas::CudaBlas::new(self.stream.clone())
                .map_err(|e| KernelError::Driver(format!("creating the cuBLAS handle: {e:?}")))?;
            let _ = self.blas.set(Mutex::new(b));
        }
        let lock = self.blas.get().expect("set above");
        lock.lock().map_err(|_| KernelError::Driver("cuBLAS handle poisoned".into()))
    }

    /// Waits for the stream.
    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(|e| KernelError::Driver(format!("synchronize: {e}")))
    }
}

/// The device for GPU tests: `None` (with a printed line) when no usable device exists, a failure when
/// `CHEEMS_REQUIRE_GPU` is set.
pub fn test_gpu() -> Option<Arc<Gpu>> {
    static GPU: OnceLock<Option<Arc<Gpu>>> = OnceLock::new();
    GPU.get_or_init(|| match Gpu::new(0) {
        Ok(g) => Some(Arc::new(g)),
        Err(e) => {
            assert!(std::env::var_os("CHEEMS_REQUIRE_GPU").is_none(), "no usable CUDA device: {e}");
            eprintln!("skipped: no usable CUDA device ({e})");
            None
        }
    })
    .clone()
}

/// Whether NVRTC loads, for tests that compile kernels without a device: without it, a printed line and `false`, or
/// a failure when `CHEEMS_REQUIRE_NVRTC` or `CHEEMS_REQUIRE_GPU` is set.
pub fn test_nvrtc() -> bool {
    let Err(e) = probe_nvrtc() else { return true };
    let required = ["CHEEMS_REQUIRE_NVRTC", "CHEEMS_REQUIRE_GPU"]
        .iter()
        .any(|v| std::env::var_os(v).is_some());
    assert!(!required, "NVRTC is required: {e}");
    eprintln!("skipped: {e}");
    false
}

/// Element types of kernel buffers; `NAME` is the kernel-name suffix (`rms_norm_bf16`).
pub trait Elem: DeviceRepr + ValidAsZeroBits + Copy + Default + Send + Sync + 'static {
    /// Kernel-name suffix.
    const NAME: &'static str;
    /// Conversion from f32 (round to nearest even).
    fn from_f32(x: f32) -> Self;
    /// Conversion to f32 (exact).
    fn to_f32(self) -> f32;
    /// The bit pattern, widened to 32 bits.
    fn bits(self) -> u32;
}

impl Elem for f32 {
    const NAME: &'static str = "f32";
    fn from_f32(x: f32) -> f32 {
        x
    }
    fn to_f32(self) -> f32 {
        self
    }
    fn bits(self) -> u32 {
        self.to_bits()
    }
}

impl Elem for half::f16 {
    const NAME: &'static str = "f16";
    fn from_f32(x: f32) -> half::f16 {
        half::f16::from_f32(x)
    }
    fn to_f32(self) -> f32 {
        half::f16::to_f32(self)
    }
    fn bits(self) -> u32 {
        self.to_bits() as u32
    }
}

impl Elem for half::bf16 {
    const NAME: &'static str = "bf16";
    fn from_f32(x: f32) -> half::bf16 {
        half::bf16::from_f32(x)
    }
    fn to_f32(self) -> f32 {
        half::bf16::to_f32(self)
    }
    fn bits(self) -> u32 {
        self.to_bits() as u32
    }
}

/// A tensor map for the copy engine (`TensorMap` in common.cuh): passed to a kernel by value, as its
/// `const __grid_constant__ TensorMap` parameter.
#[derive(Clone, Copy)]
#[repr(transparent)]
pub struct TensorMap(cudarc::driver::sys::CUtensorMap);

// SAFETY: a CUtensorMap is 128 plain bytes with the alignment (64) the kernel parameter declares.
unsafe impl DeviceRepr for TensorMap {}

impl Gpu {
    /// The tensor map of the contiguous bf16 or f16 tensor in `buf` with `dims` elements (innermost first), read in
    /// boxes of `boxes` elements stored with the 128-byte swizzle (`sw128_desc`'s layout; the innermost box side must
    /// be 64); elements past the ends arrive as zeros.
    pub fn tensor_map_16<T: Elem>(
        &self,
        buf: &CudaSlice<T>,
        dims: [u64; 3],
        boxes: [u32; 3],
    ) -> Result<TensorMap> {
        use cudarc::driver::{sys, DevicePtr};
        use sys::CUtensorMapDataType as Ty;
        let ty = match T::NAME {
            "bf16" => Ty::CU_TENSOR_MAP_DATA_TYPE_BFLOAT16,
            "f16" => Ty::CU_TENSOR_MAP_DATA_TYPE_FLOAT16,
            _ => Ty::CU_TENSOR_MAP_DATA_TYPE_FLOAT32,
        };
        if std::mem::size_of::<T>() != 2
            || boxes[0] != 64
            || dims.iter().product::<u64>() > buf.len() as u64
        {
            return Err(KernelError::BadParams(format!(
                "tensor map of {} elements {dims:?} in boxes {boxes:?} over {} {} elements",
                dims.iter().product::<u64>(),
                buf.len(),
                T::NAME
            )));
        }
        let (ptr, _record) = buf.device_ptr(&self.stream);
        let strides = [dims[0] * 2, dims[0] * dims[1] * 2];
        let ones = [1u32; 3];
        let mut map = std::mem::MaybeUninit::<sys::CUtensorMap>::uninit();
        // SAFETY: `map` is written by the call; `ptr` is a live device allocation of at least the described
        // elements (checked above), 16-byte aligned as every allocation is, with strides that are multiples of 16
        // for the head dimensions the callers pass; every array has the rank's length.
        let r = unsafe {
            sys::cuTensorMapEncodeTiled(
                map.as_mut_ptr(),
                ty,
                3,
                ptr as *mut std::ffi::c_void,
                dims.as_ptr(),
                strides.as_ptr(),
                boxes.as_ptr(),
                ones.as_ptr(),
                sys::CUtensorMapInterleave::CU_TENSOR_MAP_INTERLEAVE_NONE,
                sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_128B,
                sys::CUtensorMapL2promotion::CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                sys::CUtensorMapFloatOOBfill::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
            )
        };
        r.result().map_err(|e| {
            KernelError::Driver(format!("cuTensorMapEncodeTiled {dims:?} {boxes:?}: {e}"))
        })?;
        // SAFETY: the call succeeded, so it wrote the map.
        Ok(TensorMap(unsafe { map.assume_init() }))
    }
}

impl Gpu {
    /// Copies host values to a new device buffer.
    pub fn upload<T: DeviceRepr>(&self, host: &[T]) -> Result<CudaSlice<T>> {
        self.stream.clone_htod(host).map_err(|e| KernelError::Driver(format!("upload: {e}")))
    }

    /// A device buffer of `n` elements whose contents are unspecified, for outputs that a kernel writes in full
    /// (every bit pattern is a valid value of the element types used here). With `CHEEMS_CUDA_POISON=1` the
    /// buffer is filled with `0xFF` bytes (NaN for f32/bf16, −1 for i64), so a kernel that leaves part of its
    /// output unwritten shows up in the results.
    pub fn uninit<T: DeviceRepr + ValidAsZeroBits>(&self, n: usize) -> Result<CudaSlice<T>> {
        let bytes = n * std::mem::size_of::<T>();
        let mut reused = None;
        if let Ok(mut pool) = self.graph_pool.lock() {
            if let Some(pool) = pool.as_mut().filter(|_| bytes > 0) {
                reused = pool.spare.get_mut(&bytes).and_then(|v| v.pop());
                if pool.sealed {
                    let Some(ptr) = reused else {
                        return Err(KernelError::Driver(format!(
                            "a recorded step asked for a buffer of {bytes} bytes that its eager run did not use"
                        )));
                    };
                    pool.handed.push((ptr, ptr + bytes as u64));
                }
            }
        }
        if reused.is_none() {
            reused = match self.spare.lock() {
                Ok(mut spare) => spare.get_mut(&bytes).and_then(|v| v.pop()),
                Err(_) => None,
            };
        }
        let mut s = match reused {
            // SAFETY: `ptr` is a spare allocation of exactly `bytes` bytes of this context, handed over by
            // `recycle` after its last use was issued on this stream; stream order makes the reuse safe.
            Some(ptr) => unsafe { self.stream.upgrade_device_ptr::<T>(ptr, n) },
            // SAFETY: the contents are never read as Rust values before a kernel or copy writes them; on the
            // device any bit pattern is a valid f32, bf16, f16 or i64.
            None => unsafe { self.stream.alloc::<T>(n) }
                .map_err(|e| KernelError::Driver(format!("alloc {n}: {e}")))?,
        };
        if self.poison && n > 0 {
            use cudarc::driver::DevicePtrMut;
            let bytes = n * std::mem::size_of::<T>();
            let (ptr, _record) = s.device_ptr_mut(&self.stream);
            // SAFETY: `ptr` addresses `bytes` bytes owned by `s`, on this stream.
            unsafe {
                cudarc::driver::result::memset_d8_async(ptr, 0xFF, bytes, self.stream.cu_stream())
            }
            .map_err(|e| KernelError::Driver(format!("poisoning {bytes} bytes: {e}")))?;
        }
        Ok(s)
    }

    /// Takes back a buffer whose last use has been issued on this stream: buffers of at most
    /// [`SPARE_MAX_BYTES`] are kept (a bounded number per size) and handed out again by [`Gpu::uninit`] without
    /// a driver call; others are freed.
    pub fn recycle<T>(&self, s: CudaSlice<T>) {
        let bytes = s.len() * std::mem::size_of::<T>();
        if let Ok(mut pool) = self.graph_pool.lock() {
            if let Some(pool) = pool.as_mut().filter(|_| bytes > 0) {
                pool.spare.entry(bytes).or_default().push(s.leak());
                return;
            }
        }
        if bytes == 0 || bytes > SPARE_MAX_BYTES {
            return drop(s);
        }
        let Ok(mut spare) = self.spare.lock() else { return drop(s) };
        let v = spare.entry(bytes).or_default();
        if v.len() >= SPARE_PER_SIZE {
            drop(spare);
            return drop(s);
        }
        v.push(s.leak());
    }

    /// Starts building a recorded graph's memory: from now until [`Gpu::end_graph_pool`], [`Gpu::uninit`] hands
    /// out and [`Gpu::recycle`] takes back buffers of a pool that only this graph uses. Run the step once eagerly
    /// (the pool fills with every buffer it needs), [`Gpu::seal_graph_pool`], then record the same step: it finds
    /// every buffer in the pool, so the recording makes no driver allocation.
    pub fn begin_graph_pool(&self) -> Result<()> {
        let mut pool = self
            .graph_pool
            .lock()
            .map_err(|_| KernelError::Driver("graph pool poisoned".into()))?;
        if pool.is_some() {
            return Err(KernelError::Driver("a graph pool is already open".into()));
        }
        *pool = Some(GraphPool::default());
        Ok(())
    }

    /// From now on a buffer the pool does not hold is an error rather than a driver allocation.
    pub fn seal_graph_pool(&self) {
        if let Ok(Some(pool)) = self.graph_pool.lock().as_deref_mut() {
            pool.sealed = true;
        }
    }

    /// The device memory of `s`.
    pub fn span<T>(&self, s: &CudaSlice<T>) -> order::Span {
        use cudarc::driver::DevicePtr;
        let (p, _record) = s.device_ptr(&self.stream);
        (p, p + (s.len() * std::mem::size_of::<T>()) as u64)
    }

    /// The sealed graph pool's buffers handed out by [`Gpu::uninit`] since the last call (or the seal): memory that
    /// the work issued in between may write.
    pub fn take_handed_out(&self) -> Vec<order::Span> {
        match self.graph_pool.lock().as_deref_mut() {
            Ok(Some(pool)) => std::mem::take(&mut pool.handed),
            _ => Vec::new(),
        }
    }

    /// Closes the graph pool; its buffers now belong to the returned value (keep it as long as the graph).
    pub fn end_graph_pool(&self) -> GraphBuffers {
        let pool = self.graph_pool.lock().ok().and_then(|mut p| p.take()).unwrap_or_default();
        let ptrs =
            pool.spare.into_iter().flat_map(|(b, v)| v.into_iter().map(move |p| (p, b))).collect();
        GraphBuffers { ptrs, stream: self.stream.clone() }
    }

    /// Sets every element of `s` to `v` (rounded to `T`) on the stream: a memset, which a recording can hold (a
    /// copy from host memory it could not).
    pub fn fill<T: Elem>(&self, s: &mut CudaSlice<T>, v: f32) -> Result<()> {
        use cudarc::driver::DevicePtrMut;
        let n = s.len();
        if n == 0 {
            return Ok(());
        }
        let bits = T::from_f32(v).bits();
        let stream = self.stream.cu_stream();
        let (ptr, _record) = s.device_ptr_mut(&self.stream);
        // SAFETY: `ptr` addresses the `n` elements of `s`, each of `size_of::<T>()` bytes, on this stream.
        let r = unsafe {
            match std::mem::size_of::<T>() {
                4 => cudarc::driver::sys::cuMemsetD32Async(ptr, bits, n, stream),
                2 => cudarc::driver::sys::cuMemsetD16Async(ptr, bits as u16, n, stream),
                w => return Err(KernelError::BadParams(format!("no fill for {w}-byte elements"))),
            }
        };
        r.result().map_err(|e| KernelError::Driver(format!("filling {n} elements: {e:?}")))
    }

    /// A zeroed device buffer of `n` elements.
    pub fn zeros<T: DeviceRepr + ValidAsZeroBits>(&self, n: usize) -> Result<CudaSlice<T>> {
        self.stream.alloc_zeros(n).map_err(|e| KernelError::Driver(format!("alloc {n}: {e}")))
    }

    /// Copies a device buffer back to the host (synchronising the stream).
    pub fn download<T: DeviceRepr + Default + Clone>(&self, dev: &CudaSlice<T>) -> Result<Vec<T>> {
        self.stream.clone_dtoh(dev).map_err(|e| KernelError::Driver(format!("download: {e}")))
    }
}

/// Pushes `buf`, or a null pointer (`null`, a zero) for an absent buffer.
pub fn arg_or_null<'a, U>(
    launch: &mut cudarc::driver::LaunchArgs<'a>,
    buf: Option<&'a CudaSlice<U>>,
    null: &'a u64,
) {
    use cudarc::driver::PushKernelArg;
    match buf {
        Some(buf) => launch.arg(buf),
        None => launch.arg(null),
    };
}

/// Launch failure as a [`KernelError`].
pub fn launch_error(kernel: &str, e: cudarc::driver::DriverError) -> KernelError {
    KernelError::Driver(format!("launching {kernel}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each kernel compiles with NVRTC for sm_90 (no GPU needed). Skipped without NVRTC unless
    /// `CHEEMS_REQUIRE_NVRTC` or `CHEEMS_REQUIRE_GPU` is set.
    #[test]
    fn all_kernels_compile_for_sm_90() {
        for src in all_sources() {
            if crate::testutil::sm90_cubin(&src).is_none() {
                return;
            }
        }
    }

    /// Every source compiles for sm_90 with the kernel trace (`CHEEMS_TRACE`, [`trace`]) and holds the trace's
    /// globals, which a traced device sets when it loads the module.
    #[test]
    fn all_kernels_compile_with_the_trace() {
        if !test_nvrtc() {
            return;
        }
        for src in all_sources() {
            let cubin = compile_cubin_traced(&src, "sm_90", true).unwrap_or_else(|e| panic!("{e}"));
            for global in ["cheems_trace_buf", "cheems_trace_tag", "cheems_trace_cap"] {
                assert!(crate::testutil::has_symbol(&cubin, global), "{}: no `{global}`", src.file);
            }
        }
    }

    /// Every source compiles for sm_80 too, the oldest architecture an artifact targets (`cheems compile --target
    /// cuda:sm_80`), where sm_90 features such as thread-block clusters must stay out.
    #[test]
    fn all_kernels_compile_for_sm_80() {
        for src in all_sources() {
            if crate::testutil::cubin_for(&src, "sm_80").is_none() {
                return;
            }
        }
    }

    /// Kernels whose body first loads memory that no kernel before it writes and then calls `grid_entry()`, so
    /// that those loads overlap the kernel they depend on: constants (weights, product keys), the SSD state (which
    /// only the SSD step writes), the step's position (which a copy before the step writes: the mask GEMV and the
    /// rotations into a cache), or, in a decode step given the slot its key fills, the other slots of the caches
    /// (the keep window, the GQA decode; both read the slot again after the wait). The function that runs the body,
    /// and its source file.
    const CONSTANTS_BEFORE_ENTRY: [(&str, &str); 12] = [
        ("matmul.cu", "gemv"),
        ("matmul.cu", "gated_gemv"),
        ("matmul.cu", "mask_gemv"),
        ("rms_norm.cu", "rms_norm"),
        ("rms_norm.cu", "residual_rms_norm"),
        ("norm_rope.cu", "norm_rope"),
        ("rope.cu", "rope_apply"),
        ("ssd_step.cu", "ssd_step_vec"),
        ("pk_topk.cu", "pk_topk"),
        ("pk_topk.cu", "pk_topk_row"),
        ("masked_attention.cu", "keep_window"),
        ("masked_attention.cu", "decode_gqa"),
    ];

    /// A recorded step lets a kernel start before the kernel it depends on has finished (`graph`), which is only
    /// sound when the kernel's first statement waits for it: `grid_entry()` opens every kernel body, except in
    /// [`CONSTANTS_BEFORE_ENTRY`], where the body calls the named function and that function reads only such memory
    /// before its own `grid_entry()`.
    #[test]
    fn every_kernel_opens_with_grid_entry() {
        let mut kernels = 0;
        for src in all_sources() {
            let early: Vec<&str> = CONSTANTS_BEFORE_ENTRY
                .iter()
                .filter(|(f, _)| *f == src.file)
                .map(|(_, func)| *func)
                .collect();
            if !early.is_empty() {
                assert!(src.code.contains("grid_entry();"), "{}: no grid_entry()", src.file);
            }
            let mut rest = src.code;
            while let Some(at) = rest.find("__global__") {
                let decl = &rest[at..];
                let open = decl
                    .find('{')
                    .unwrap_or_else(|| panic!("{}: a kernel without a body", src.file));
                let name = decl[..open]
                    .split('(')
                    .filter_map(|part| part.split_whitespace().last())
                    .find(|w| *w != "__launch_bounds__");
                let body =
                    decl[open + 1..].trim_start_matches(|c: char| c.is_whitespace() || c == '\\');
                let opens_early = early.iter().any(|func| {
                    body.strip_prefix(func).is_some_and(|after| after.starts_with(['<', '(']))
                });
                assert!(
                    body.starts_with("grid_entry();") || opens_early,
                    "{}: kernel `{}` does not open with grid_entry()",
                    src.file,
                    name.unwrap_or("?")
                );
                kernels += 1;
                rest = &decl[open..];
            }
        }
        assert!(kernels >= 54, "found {kernels} kernel definitions (a macro's counts once)");
    }

    #[test]
    fn a_compile_error_carries_the_log_as_text() {
        if probe_nvrtc().is_err() {
            eprintln!("skipped: no NVRTC");
            return;
        }
        let bad = Source {
            file: "broken.cu",
            code: "extern \"C\" __global__ void k() { undefined_name; }",
        };
        let e = compile_cubin(&bad, "sm_90").unwrap_err().to_string();
        assert!(e.contains("broken.cu") && e.contains("undefined_name"), "{e}");
        assert!(!e.contains("\\n"), "the log must be readable text, not an escaped string: {e}");
    }
}
