//! A trace of this crate's kernels: when each one's grid was let go, read from the device clock.
//!
//! A [`Gpu`] opened with a trace ([`Gpu::new_traced`], or `CHEEMS_CUDA_TRACE=1`) compiles every kernel source with
//! `CHEEMS_TRACE` defined (`common.cuh`): thread 0 of block (0, 0, 0) of every kernel then records, in
//! `grid_entry()`, the device's global timer when it got there and when the grid's wait let it go (under a
//! programmatic dependency, once the kernels before it have finished). Kernels run from a compiled artifact's CUBINs
//! are compiled again with NVRTC, which must be available. Other work (cuBLAS, copies) records nothing.
//!
//! [`profile`] turns the records of one recorded step into a timeline: sorted by release, the time from each
//! release to the next is charged to the kernel released first, so the charges add up to the span from the first
//! release to the last. A kernel is named from the recording's kernel nodes with the same module, grid and block
//! size ([`Recording::kernels`]).

use super::graph::Recording;
use super::Gpu;
use crate::{KernelError, Result};
use cudarc::driver::{CudaModule, CudaSlice, CudaStream};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Records a trace buffer holds by default.
pub const RECORDS: usize = 1 << 16;

/// The device buffer the kernels write and the modules attached to it.
pub(super) struct Trace {
    /// Word 0 counts the records; record i is words 4 + 4i .. 8 + 4i (`common.cuh`).
    buf: CudaSlice<u64>,
    cap: usize,
    /// Source file of each module, by tag.
    sources: Mutex<Vec<&'static str>>,
    /// A stream of its own for setting a module's globals: a module may be loaded while the device's stream
    /// records, and a copy issued there would become part of the recording.
    setter: Arc<CudaStream>,
    /// Whether copies on `setter` may still be running: issued while the device's stream recorded, when no
    /// stream may be waited for ([`Trace::settle`] waits).
    pending: AtomicBool,
}

/// One kernel's record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceRecord {
    /// Global timer (ns) when block (0, 0, 0) reached `grid_entry()`.
    pub reached_ns: u64,
    /// Global timer (ns) when the grid's wait let it go.
    pub released_ns: u64,
    /// The kernel's source file.
    pub source: &'static str,
    /// Threads of a block.
    pub threads: u32,
    /// The grid.
    pub grid: [u32; 3],
}

/// A kernel node of a recording, as [`profile`] names records after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelNode {
    /// The kernel's source file.
    pub source: &'static str,
    /// The kernel's name.
    pub name: String,
    /// The grid.
    pub grid: [u32; 3],
    /// Threads of a block.
    pub threads: u32,
}

/// A kernel's share of a traced step.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelTime {
    /// The kernel's name; names joined by `|` where kernels of one module share a grid and block size, `?` where no
    /// kernel node matches.
    pub name: String,
    /// Its launches in the step.
    pub launches: usize,
    /// Time from its releases to the next releases (ns).
    pub charged_ns: u64,
    /// Time its first blocks waited at the grid's wait (ns).
    pub waited_ns: u64,
}

/// The timeline of a traced step.
#[derive(Clone, Debug, PartialEq)]
pub struct StepProfile {
    /// From the first release to the last (ns).
    pub span_ns: u64,
    /// The kernel released last (charged nothing: nothing follows it in the trace).
    pub last: String,
    /// By charged time, largest first (then by name).
    pub kernels: Vec<KernelTime>,
}

impl Trace {
    pub(super) fn new(stream: &Arc<CudaStream>, cap: usize) -> Result<Trace> {
        let buf = stream
            .alloc_zeros::<u64>(4 + 4 * cap)
            .map_err(|e| KernelError::Driver(format!("allocating the kernel trace: {e}")))?;
        stream
            .synchronize()
            .map_err(|e| KernelError::Driver(format!("clearing the kernel trace: {e}")))?;
        let setter = stream
            .context()
            .new_stream()
            .map_err(|e| KernelError::Driver(format!("creating the kernel trace's stream: {e}")))?;
        Ok(Trace {
            buf,
            cap,
            sources: Mutex::new(Vec::new()),
            setter,
            pending: AtomicBool::new(false),
        })
    }

    /// Points the trace globals of `module` (compiled from `source` with `CHEEMS_TRACE`) at the buffer. The values
    /// are in place when this returns, unless `stream` (the device's) is recording: then once [`Trace::settle`]
    /// returns, which ending the recording calls.
    pub(super) fn attach(
        &self,
        module: &Arc<CudaModule>,
        source: &'static str,
        stream: &Arc<CudaStream>,
    ) -> Result<()> {
        use cudarc::driver::DevicePtr;
        let tag = {
            let mut s =
                self.sources.lock().map_err(|_| KernelError::Driver("trace poisoned".into()))?;
            s.push(source);
            (s.len() - 1) as u32
        };
        let (ptr, _record) = self.buf.device_ptr(&self.setter);
        let cap = u32::try_from(self.cap).unwrap_or(u32::MAX);
        let values: [(&str, Vec<u8>); 3] = [
            ("cheems_trace_buf", ptr.to_le_bytes().to_vec()),
            ("cheems_trace_tag", tag.to_le_bytes().to_vec()),
            ("cheems_trace_cap", cap.to_le_bytes().to_vec()),
        ];
        for (name, bytes) in values {
            let mut global = module.get_global(name, &self.setter).map_err(|e| {
                KernelError::Driver(format!("{source}: the trace global `{name}`: {e}"))
            })?;
            self.setter
                .memcpy_htod(&bytes, &mut global)
                .map_err(|e| KernelError::Driver(format!("{source}: setting `{name}`: {e}")))?;
        }
        let status = stream
            .capture_status()
            .map_err(|e| KernelError::Driver(format!("reading whether the stream records: {e}")))?;
        if status == cudarc::driver::sys::CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE {
            self.setter.synchronize().map_err(|e| {
                KernelError::Driver(format!("{source}: setting the trace globals: {e}"))
            })
        } else {
            self.pending.store(true, Ordering::Release);
            Ok(())
        }
    }

    /// Waits for the globals' copies issued while the device's stream recorded.
    pub(super) fn settle(&self) -> Result<()> {
        if self.pending.swap(false, Ordering::AcqRel) {
            self.setter
                .synchronize()
                .map_err(|e| KernelError::Driver(format!("setting the trace globals: {e}")))?;
        }
        Ok(())
    }
}

impl Gpu {
    /// Opens device `ordinal` as [`Gpu::new`] does, with a trace of [`RECORDS`] records (see the module
    /// documentation).
    pub fn new_traced(ordinal: usize) -> Result<Gpu> {
        super::probe_nvrtc()?;
        Gpu::open(ordinal, super::cubin::CubinSet::default(), true)
    }

    /// Whether this device's kernels record a trace.
    pub fn tracing(&self) -> bool {
        self.trace.is_some()
    }

    /// Forgets the records so far (on the stream).
    pub fn trace_reset(&self) -> Result<()> {
        use cudarc::driver::DevicePtr;
        let t = self.trace.as_ref().ok_or_else(not_traced)?;
        t.settle()?;
        let (ptr, _record) = t.buf.device_ptr(&self.stream);
        // SAFETY: `ptr` addresses the trace buffer, whose first 8 bytes are the record count, on this stream.
        unsafe { cudarc::driver::result::memset_d8_async(ptr, 0, 8, self.stream.cu_stream()) }
            .map_err(|e| KernelError::Driver(format!("resetting the kernel trace: {e}")))
    }

    /// The records since the last [`Gpu::trace_reset`] (waits for the stream), in the order they were written; an
    /// error when more were made than the buffer holds.
    pub fn trace_records(&self) -> Result<Vec<TraceRecord>> {
        let t = self.trace.as_ref().ok_or_else(not_traced)?;
        let words = self.download(&t.buf)?;
        let n = words[0] as usize;
        if n > t.cap {
            return Err(KernelError::Driver(format!(
                "the kernel trace holds {} records; {n} kernels ran",
                t.cap
            )));
        }
        let sources =
            t.sources.lock().map_err(|_| KernelError::Driver("trace poisoned".into()))?.clone();
        words[4..4 + 4 * n]
            .chunks_exact(4)
            .map(|r| {
                let tag = (r[2] >> 32) as usize;
                let source = *sources.get(tag).ok_or_else(|| {
                    KernelError::Driver(format!(
                        "a trace record names module {tag}, which was not loaded"
                    ))
                })?;
                Ok(TraceRecord {
                    reached_ns: r[0],
                    released_ns: r[1],
                    source,
                    threads: r[2] as u32,
                    grid: [r[3] as u32, (r[3] >> 32) as u16 as u32, (r[3] >> 48) as u32],
                })
            })
            .collect()
    }

    /// The kernel nodes of `rec` (those of kernels this device did not load left out).
    pub fn recorded_kernels(&self, rec: &Recording) -> Result<Vec<KernelNode>> {
        let m = self
            .functions
            .lock()
            .map_err(|_| KernelError::Driver("function cache poisoned".into()))?;
        let names: HashMap<usize, (&'static str, &str)> = m
            .iter()
            .flat_map(|(src, fs)| {
                fs.iter().map(|(name, f)| (f.cu_function() as usize, (*src, name.as_str())))
            })
            .collect();
        Ok(rec
            .kernels()?
            .into_iter()
            .filter_map(|(f, grid, threads)| {
                let &(source, name) = names.get(&(f as usize))?;
                Some(KernelNode { source, name: name.to_string(), grid, threads })
            })
            .collect())
    }
}

fn not_traced() -> KernelError {
    KernelError::BadParams("this device was not opened with a kernel trace".into())
}

/// The timeline of one step's `records`, its kernels named from the recording's `kernels` (see the module
/// documentation). `None` without records.
pub fn profile(records: &[TraceRecord], kernels: &[KernelNode]) -> Option<StepProfile> {
    let mut names: BTreeMap<(&str, [u32; 3], u32), BTreeSet<&str>> = BTreeMap::new();
    for k in kernels {
        names.entry((k.source, k.grid, k.threads)).or_default().insert(&k.name);
    }
    let name_of = |r: &TraceRecord| -> String {
        names
            .get(&(r.source, r.grid, r.threads))
            .map_or_else(|| "?".to_string(), |s| s.iter().copied().collect::<Vec<_>>().join("|"))
    };
    let mut sorted: Vec<&TraceRecord> = records.iter().collect();
    sorted.sort_by_key(|r| (r.released_ns, r.reached_ns));
    let (first, last) = (sorted.first()?, sorted.last()?);
    let mut by_name: BTreeMap<String, KernelTime> = BTreeMap::new();
    for (i, r) in sorted.iter().enumerate() {
        let name = name_of(r);
        let next = sorted.get(i + 1).map_or(r.released_ns, |n| n.released_ns);
        let k = by_name.entry(name.clone()).or_insert(KernelTime {
            name,
            launches: 0,
            charged_ns: 0,
            waited_ns: 0,
        });
        k.launches += 1;
        k.charged_ns += next - r.released_ns;
        k.waited_ns += r.released_ns.saturating_sub(r.reached_ns);
    }
    let mut kernels: Vec<KernelTime> = by_name.into_values().collect();
    kernels.sort_by(|a, b| b.charged_ns.cmp(&a.charged_ns).then_with(|| a.name.cmp(&b.name)));
    Some(StepProfile {
        span_ns: last.released_ns - first.released_ns,
        last: name_of(last),
        kernels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(source: &'static str, released_ns: u64, grid: u32) -> TraceRecord {
        TraceRecord {
            reached_ns: released_ns - 1,
            released_ns,
            source,
            threads: 256,
            grid: [grid, 1, 1],
        }
    }

    /// Releases sorted, each gap charged to the kernel released before it; names from the matching kernel nodes,
    /// joined where two share a module, grid and block size, `?` where none matches.
    #[test]
    fn gaps_are_charged_to_the_kernel_released_before_them() {
        let records = [
            rec("a.cu", 130, 2),
            rec("a.cu", 100, 1),
            rec("b.cu", 110, 1),
            rec("a.cu", 125, 1),
            rec("c.cu", 131, 9),
        ];
        let node = |source, name: &str, grid| KernelNode {
            source,
            name: name.to_string(),
            grid: [grid, 1, 1],
            threads: 256,
        };
        let kernels = [
            node("a.cu", "one", 1),
            node("a.cu", "two", 2),
            node("b.cu", "x", 1),
            node("b.cu", "y", 1),
        ];
        let p = profile(&records, &kernels).unwrap();
        assert_eq!(p.span_ns, 31);
        assert_eq!(p.last, "?");
        let got: Vec<(&str, usize, u64, u64)> = p
            .kernels
            .iter()
            .map(|k| (k.name.as_str(), k.launches, k.charged_ns, k.waited_ns))
            .collect();
        assert_eq!(got, [("one", 2, 15, 2), ("x|y", 1, 15, 1), ("two", 1, 1, 1), ("?", 1, 0, 1)]);
        assert_eq!(p.kernels.iter().map(|k| k.charged_ns).sum::<u64>(), p.span_ns);
        assert!(profile(&[], &kernels).is_none());
    }

    /// A chain of `add` kernels recorded on a traced device, replayed: one record per kernel, released in the
    /// chain's order, each named `add_f32`.
    #[test]
    fn a_traced_recording_records_each_kernel() {
        use crate::cuda::test_gpu;
        if test_gpu().is_none() {
            return;
        }
        let gpu = Gpu::new_traced(0).unwrap();
        assert!(gpu.tracing());
        let n = 1 << 16;
        let links = 8;
        let mut x = [gpu.upload(&vec![1.0f32; n]).unwrap(), gpu.zeros::<f32>(n).unwrap()];
        let b = gpu.upload(&vec![1.0f32; n]).unwrap();
        let rec =
            crate::elementwise::cuda::record_add_chain(&gpu, &mut x, &b, links, true).unwrap();
        gpu.trace_reset().unwrap();
        rec.launch().unwrap();
        let records = gpu.trace_records().unwrap();
        assert_eq!(records.len(), links, "{records:?}");
        let released: Vec<u64> = records.iter().map(|r| r.released_ns).collect();
        assert!(
            released.windows(2).all(|w| w[0] <= w[1]),
            "releases out of the chain's order: {released:?}"
        );
        assert!(records
            .iter()
            .all(|r| r.reached_ns <= r.released_ns && r.source == "elementwise.cu"));
        let kernels = gpu.recorded_kernels(&rec).unwrap();
        assert_eq!(kernels.len(), links);
        let p = profile(&records, &kernels).unwrap();
        assert_eq!(p.kernels.len(), 1, "{p:?}");
        assert_eq!((p.kernels[0].name.as_str(), p.kernels[0].launches), ("add_f32", links));
        assert_eq!(p.kernels[0].charged_ns, p.span_ns);
        assert_eq!(gpu.download(&x[0]).unwrap(), vec![1.0 + links as f32; n]);
        let plain = Gpu::new(0).unwrap();
        assert!(matches!(plain.trace_records(), Err(KernelError::BadParams(_))));
    }
}
