//! Recorded stream work (CUDA graphs) whose kernels may overlap their neighbours' launch.
//!
//! A recording made by [`Gpu::begin_recording`] / [`Gpu::end_recording`] is the captured graph with one change
//! before it is instantiated: every edge from a kernel to one of this crate's kernels becomes a programmatic
//! dependency. The dependent kernel's blocks are then scheduled as soon as every block of the kernel before it has
//! passed its own wait (each kernel lets its dependents go right after it, `grid_entry` in common.cuh), and wait in
//! `griddepcontrol.wait` until that kernel has finished and its writes are visible. Results are those of the plain
//! graph; what goes away is the launch latency between consecutive kernels. Edges into other work (cuBLAS kernels,
//! copies, memsets) stay as they were.
//!
//! Before that, a recording issued in segments may be ordered by data instead of by issue order (`order`).

use super::order::{order_by_data, Ordering, Segment};
use super::Gpu;
use crate::{KernelError, Result};
use cudarc::driver::sys;
use cudarc::driver::CudaStream;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

/// An instantiated recording, launched on the stream it was recorded on.
pub struct Recording {
    graph: sys::CUgraph,
    exec: sys::CUgraphExec,
    stream: Arc<CudaStream>,
    programmatic: usize,
    ordering: Option<Ordering>,
}

// SAFETY: the graph and its executable are driver handles used only through `&self` methods that issue work on the
// owning stream; the driver API is thread safe for these calls.
unsafe impl Send for Recording {}
// SAFETY: as above; no method mutates the handles.
unsafe impl Sync for Recording {}

impl Drop for Recording {
    fn drop(&mut self) {
        // SAFETY: both handles were created by `end_recording` and are destroyed once, here; a launch already
        // issued keeps its own reference to the executable.
        unsafe {
            let _ = sys::cuGraphExecDestroy(self.exec);
            let _ = sys::cuGraphDestroy(self.graph);
        }
    }
}

pub(super) fn check(r: sys::CUresult, what: &str) -> Result<()> {
    r.result().map_err(|e| KernelError::Driver(format!("{what}: {e}")))
}

impl Recording {
    /// Issues the recorded work on its stream.
    pub fn launch(&self) -> Result<()> {
        // SAFETY: `exec` is a live executable graph of this stream's context.
        check(
            unsafe { sys::cuGraphLaunch(self.exec, self.stream.cu_stream()) },
            "launching a recording",
        )
    }

    /// Moves the executable to the device ahead of its first launch.
    pub fn upload(&self) -> Result<()> {
        // SAFETY: as in `launch`.
        check(
            unsafe { sys::cuGraphUpload(self.exec, self.stream.cu_stream()) },
            "uploading a recording",
        )
    }

    /// Edges made programmatic when the recording was instantiated.
    pub fn programmatic_edges(&self) -> usize {
        self.programmatic
    }

    /// How the recording was ordered by data, when it was (it was asked to and holds no memory allocation).
    pub fn ordering(&self) -> Option<Ordering> {
        self.ordering
    }

    /// The kernel nodes: the function each launches, its grid and the threads of a block.
    pub fn kernels(&self) -> Result<Vec<(sys::CUfunction, [u32; 3], u32)>> {
        let mut out = Vec::new();
        for node in nodes(self.graph)? {
            if matches!(node_type(node)?, sys::CUgraphNodeType::CU_GRAPH_NODE_TYPE_KERNEL) {
                let p = kernel_params(node)?;
                let threads = p.blockDimX * p.blockDimY * p.blockDimZ;
                out.push((p.func, [p.gridDimX, p.gridDimY, p.gridDimZ], threads));
            }
        }
        Ok(out)
    }

    /// The recording's nodes by kind (`kernel`, `memset`, `memcpy`, `alloc`, `free`, `other`).
    pub fn node_counts(&self) -> Result<BTreeMap<&'static str, usize>> {
        let mut counts = BTreeMap::new();
        for node in nodes(self.graph)? {
            let kind = match node_type(node)? {
                sys::CUgraphNodeType::CU_GRAPH_NODE_TYPE_KERNEL => "kernel",
                sys::CUgraphNodeType::CU_GRAPH_NODE_TYPE_MEMSET => "memset",
                sys::CUgraphNodeType::CU_GRAPH_NODE_TYPE_MEMCPY => "memcpy",
                sys::CUgraphNodeType::CU_GRAPH_NODE_TYPE_MEM_ALLOC => "alloc",
                sys::CUgraphNodeType::CU_GRAPH_NODE_TYPE_MEM_FREE => "free",
                _ => "other",
            };
            *counts.entry(kind).or_insert(0) += 1;
        }
        Ok(counts)
    }
}

pub(super) fn nodes(graph: sys::CUgraph) -> Result<Vec<sys::CUgraphNode>> {
    let mut n = 0usize;
    // SAFETY: `graph` is live; a null array asks for the count.
    check(
        unsafe { sys::cuGraphGetNodes(graph, std::ptr::null_mut(), &mut n) },
        "counting graph nodes",
    )?;
    let mut out = vec![std::ptr::null_mut(); n];
    // SAFETY: `out` has room for the `n` handles the driver writes.
    check(unsafe { sys::cuGraphGetNodes(graph, out.as_mut_ptr(), &mut n) }, "listing graph nodes")?;
    out.truncate(n);
    Ok(out)
}

pub(super) fn node_type(node: sys::CUgraphNode) -> Result<sys::CUgraphNodeType> {
    let mut ty = sys::CUgraphNodeType::CU_GRAPH_NODE_TYPE_EMPTY;
    // SAFETY: `node` belongs to a live graph; the driver writes one enum value.
    check(unsafe { sys::cuGraphNodeGetType(node, &mut ty) }, "a graph node's type")?;
    Ok(ty)
}

/// The function a kernel node launches.
pub(super) fn kernel_function(node: sys::CUgraphNode) -> Result<sys::CUfunction> {
    Ok(kernel_params(node)?.func)
}

/// A kernel node's launch parameters.
fn kernel_params(node: sys::CUgraphNode) -> Result<sys::CUDA_KERNEL_NODE_PARAMS> {
    // SAFETY: an all-zero parameter block is a valid value for the driver to overwrite.
    let mut p: sys::CUDA_KERNEL_NODE_PARAMS = unsafe { std::mem::zeroed() };
    // SAFETY: `node` is a kernel node of a live graph; the driver fills `p`.
    check(
        unsafe { sys::cuGraphKernelNodeGetParams_v2(node, &mut p) },
        "a kernel node's parameters",
    )?;
    Ok(p)
}

/// Fails when `graph` frees memory it did not allocate (a buffer dropped on the stream while it recorded): each
/// launch would free it again.
fn frees_only_its_own(graph: sys::CUgraph) -> Result<()> {
    use sys::CUgraphNodeType::{
        CU_GRAPH_NODE_TYPE_MEM_ALLOC as ALLOC, CU_GRAPH_NODE_TYPE_MEM_FREE as FREE,
    };
    let (mut allocated, mut freed) = (HashSet::new(), Vec::new());
    for node in nodes(graph)? {
        match node_type(node)? {
            ALLOC => {
                // SAFETY: an all-zero parameter block is a valid value for the driver to overwrite.
                let mut p: sys::CUDA_MEM_ALLOC_NODE_PARAMS = unsafe { std::mem::zeroed() };
                // SAFETY: `node` is an allocation node of a live graph; the driver fills `p`.
                check(
                    unsafe { sys::cuGraphMemAllocNodeGetParams(node, &mut p) },
                    "an allocation node's parameters",
                )?;
                allocated.insert(p.dptr);
            }
            FREE => {
                let mut ptr = 0;
                // SAFETY: `node` is a free node of a live graph; the driver writes one address.
                check(
                    unsafe { sys::cuGraphMemFreeNodeGetParams(node, &mut ptr) },
                    "a free node's address",
                )?;
                freed.push(ptr);
            }
            _ => {}
        }
    }
    match freed.into_iter().find(|p| !allocated.contains(p)) {
        Some(p) => Err(KernelError::Driver(format!(
            "the recording frees device memory at {p:#x} that it did not allocate (a buffer dropped on the stream \
             while it recorded)"
        ))),
        None => Ok(()),
    }
}

/// The graph's edges: their tails, heads and data.
pub(super) type Edges = (Vec<sys::CUgraphNode>, Vec<sys::CUgraphNode>, Vec<sys::CUgraphEdgeData>);

/// Every edge of `graph`.
pub(super) fn edges(graph: sys::CUgraph) -> Result<Edges> {
    let mut n = 0usize;
    let (no_nodes, no_data) = (std::ptr::null_mut(), std::ptr::null_mut());
    // SAFETY: `graph` is live; null arrays ask for the edge count.
    check(
        unsafe { sys::cuGraphGetEdges_v2(graph, no_nodes, no_nodes, no_data, &mut n) },
        "counting graph edges",
    )?;
    let mut from = vec![std::ptr::null_mut(); n];
    let mut to = vec![std::ptr::null_mut(); n];
    // SAFETY: an all-zero edge is a valid value for the driver to overwrite.
    let mut data: Vec<sys::CUgraphEdgeData> = vec![unsafe { std::mem::zeroed() }; n];
    // SAFETY: the three arrays have room for the `n` edges the driver writes.
    check(
        unsafe {
            sys::cuGraphGetEdges_v2(
                graph,
                from.as_mut_ptr(),
                to.as_mut_ptr(),
                data.as_mut_ptr(),
                &mut n,
            )
        },
        "listing graph edges",
    )?;
    from.truncate(n);
    to.truncate(n);
    data.truncate(n);
    Ok((from, to, data))
}

/// Turns every plain edge from a kernel node into a kernel of `own` into a programmatic one; returns how many.
/// A graph with memory allocation or free nodes is left as it is (the driver does not let their graphs' edges be
/// removed).
fn make_programmatic(graph: sys::CUgraph, own: &HashSet<usize>) -> Result<usize> {
    use sys::CUgraphNodeType::{
        CU_GRAPH_NODE_TYPE_KERNEL as KERNEL, CU_GRAPH_NODE_TYPE_MEM_ALLOC as ALLOC,
        CU_GRAPH_NODE_TYPE_MEM_FREE as FREE,
    };
    // Per node: a kernel node, and whether it launches one of `own`.
    let mut kernels: HashMap<usize, bool> = HashMap::new();
    for node in nodes(graph)? {
        match node_type(node)? {
            ALLOC | FREE => return Ok(0),
            KERNEL => {
                kernels.insert(node as usize, own.contains(&(kernel_function(node)? as usize)));
            }
            _ => {}
        }
    }
    let (from, to, data) = edges(graph)?;
    let (mut rf, mut rt, mut rd) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..from.len() {
        let plain =
            data[i].type_ == sys::CUgraphDependencyType::CU_GRAPH_DEPENDENCY_TYPE_DEFAULT as u8;
        if plain
            && kernels.contains_key(&(from[i] as usize))
            && kernels.get(&(to[i] as usize)) == Some(&true)
        {
            rf.push(from[i]);
            rt.push(to[i]);
            rd.push(data[i]);
        }
    }
    if rf.is_empty() {
        return Ok(0);
    }
    // SAFETY: the arrays hold `rf.len()` existing edges of `graph`, as listed above.
    check(
        unsafe {
            sys::cuGraphRemoveDependencies_v2(
                graph,
                rf.as_ptr(),
                rt.as_ptr(),
                rd.as_ptr(),
                rf.len(),
            )
        },
        "removing kernel edges",
    )?;
    let edge = sys::CUgraphEdgeData {
        from_port: sys::CU_GRAPH_KERNEL_NODE_PORT_PROGRAMMATIC as u8,
        to_port: 0,
        type_: sys::CUgraphDependencyType::CU_GRAPH_DEPENDENCY_TYPE_PROGRAMMATIC as u8,
        reserved: [0; 5],
    };
    let pd = vec![edge; rf.len()];
    // SAFETY: the nodes are kernel nodes of `graph`; one edge datum per pair.
    check(
        unsafe {
            sys::cuGraphAddDependencies_v2(graph, rf.as_ptr(), rt.as_ptr(), pd.as_ptr(), rf.len())
        },
        "adding programmatic kernel edges",
    )?;
    Ok(rf.len())
}

impl Gpu {
    /// Starts recording the work issued on this device's stream by this thread.
    pub fn begin_recording(&self) -> Result<()> {
        self.stream
            .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(|e| KernelError::Driver(format!("starting a recording: {e}")))
    }

    /// The recording's last node so far (`None` before the first), for a [`Segment`]'s tail.
    pub fn recorded_tail(&self) -> Result<Option<usize>> {
        let mut status = sys::CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE;
        let (mut id, mut graph) = (0u64, std::ptr::null_mut());
        let (mut deps, mut data) = (std::ptr::null(), std::ptr::null());
        let mut n = 0usize;
        // SAFETY: every out-pointer addresses a local; the driver writes the status, the capture's graph and a
        // pointer to its current dependencies, valid until the next call on this stream.
        check(
            unsafe {
                sys::cuStreamGetCaptureInfo_v3(
                    self.stream.cu_stream(),
                    &mut status,
                    &mut id,
                    &mut graph,
                    &mut deps,
                    &mut data,
                    &mut n,
                )
            },
            "reading the recording's state",
        )?;
        if status != sys::CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_ACTIVE {
            return Err(KernelError::Driver("the stream is not recording".into()));
        }
        match n {
            0 => Ok(None),
            // SAFETY: the driver reported one dependency at `deps`.
            1 => Ok(Some(unsafe { *deps } as usize)),
            _ => Err(KernelError::Driver(format!("the recording has {n} last nodes, not one"))),
        }
    }

    /// Ends the recording begun by [`Gpu::begin_recording`] and instantiates it; `None` when nothing was
    /// recorded. With `order`, the segments the recording was issued in, it is first ordered by their data
    /// ([`super::order`]; not when it allocates memory, see [`Recording::ordering`]). With `programmatic`,
    /// kernel-to-kernel edges into this crate's kernels become programmatic dependencies (see the module
    /// documentation); on devices before sm_90 they are left plain.
    ///
    /// The stream stops recording whatever the outcome. A recording may free no device memory: a buffer dropped
    /// on the stream while it records (rather than given back to the graph pool) fails in cudarc's `Drop`, which
    /// keeps the error for the context's next call; that error is taken here and fails the recording, and the
    /// buffer's memory stays allocated.
    pub fn end_recording(
        &self,
        programmatic: bool,
        order: Option<&[Segment]>,
    ) -> Result<Option<Recording>> {
        let freed = self.ctx.check_err();
        self.ctx
            .bind_to_thread()
            .map_err(|e| KernelError::Driver(format!("binding the context: {e}")))?;
        let mut graph = std::ptr::null_mut();
        // SAFETY: the stream is capturing (begun by `begin_recording`); the driver writes the graph handle.
        let ended = check(
            unsafe { sys::cuStreamEndCapture(self.stream.cu_stream(), &mut graph) },
            "ending a recording",
        );
        let ended = ended.and(freed.map_err(|e| {
            KernelError::Driver(format!("a buffer was freed on the stream while it recorded: {e}"))
        }));
        let ended = ended.and(self.trace.as_ref().map_or(Ok(()), |t| t.settle()));
        if let Err(e) = ended {
            if !graph.is_null() {
                // SAFETY: `graph` was just returned by the driver and is not referenced elsewhere.
                unsafe {
                    let _ = sys::cuGraphDestroy(graph);
                }
            }
            return Err(e);
        }
        if graph.is_null() {
            return Ok(None);
        }
        let built = (|| {
            frees_only_its_own(graph)?;
            let own = self.own_functions();
            let ordering = match order {
                Some(segs) => order_by_data(graph, segs, &own)?,
                None => None,
            };
            let programmatic = if programmatic && self.supports_programmatic() {
                make_programmatic(graph, &own)?
            } else {
                0
            };
            let mut exec = std::ptr::null_mut();
            // SAFETY: `graph` is a complete, live graph; the driver writes the executable handle.
            check(
                unsafe { sys::cuGraphInstantiateWithFlags(&mut exec, graph, 0) },
                "instantiating a recording",
            )?;
            Ok((exec, programmatic, ordering))
        })();
        match built {
            Ok((exec, programmatic, ordering)) => Ok(Some(Recording {
                graph,
                exec,
                stream: self.stream.clone(),
                programmatic,
                ordering,
            })),
            Err(e) => {
                // SAFETY: `graph` was created above and is not referenced elsewhere.
                unsafe {
                    let _ = sys::cuGraphDestroy(graph);
                }
                Err(e)
            }
        }
    }

    /// Programmatic dependencies need sm_90 or later (`grid_entry` is a no-op before).
    fn supports_programmatic(&self) -> bool {
        super::sm90_or_later(&self.arch)
    }

    /// The functions loaded from this crate's kernel sources, as raw handles.
    fn own_functions(&self) -> HashSet<usize> {
        let Ok(m) = self.functions.lock() else { return HashSet::new() };
        m.values().flat_map(|f| f.values()).map(|f| f.cu_function() as usize).collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::cuda::{test_gpu, Gpu};
    use crate::elementwise::cuda::add;

    /// A chain of dependent kernels ping-ponging between two buffers (each reads what the one before wrote and
    /// overwrites what it read), recorded with and without programmatic edges and replayed: every replay adds
    /// `b` once per kernel, exactly (small integers in f32), so a kernel that ran ahead of its input shows.
    #[test]
    fn programmatic_chains_wait_for_their_inputs() {
        if test_gpu().is_none() {
            return;
        }
        // A stream of its own: a recording takes in all work issued on its stream, and other tests share
        // `test_gpu`'s.
        let gpu = Gpu::new(0).unwrap();
        let (n, links, replays) = (1 << 20, 64, 3);
        for programmatic in [true, false] {
            let mut x = [gpu.upload(&vec![1.0f32; n]).unwrap(), gpu.zeros::<f32>(n).unwrap()];
            let b = gpu.upload(&vec![1.0f32; n]).unwrap();
            let rec =
                crate::elementwise::cuda::record_add_chain(&gpu, &mut x, &b, links, programmatic)
                    .unwrap();
            let want_edges =
                if programmatic && gpu.supports_programmatic() { links - 1 } else { 0 };
            assert_eq!(rec.programmatic_edges(), want_edges, "programmatic {programmatic}");
            assert_eq!(rec.node_counts().unwrap(), [("kernel", links)].into());
            for r in 1..=replays {
                rec.launch().unwrap();
                let got = gpu.download(&x[0]).unwrap();
                let want = (1 + r * links) as f32;
                let bad = got.iter().position(|&v| v != want);
                assert!(
                    bad.is_none(),
                    "programmatic {programmatic}, replay {r}: {:?} at {bad:?}, want {want}",
                    bad.map(|i| got[i])
                );
            }
        }
    }

    /// A recording that fails while a buffer is dropped on its stream (the graph pool sealed, the buffer it handed
    /// out dropped instead of given back, then a size it does not hold asked for): the recording reports the failure,
    /// the stream stops recording, and later work on it runs as before.
    #[test]
    fn a_failed_recording_leaves_the_stream_working() {
        if test_gpu().is_none() {
            return;
        }
        let gpu = Gpu::new(0).unwrap();
        let n = 256;
        let x = gpu.upload(&vec![1.0f32; n]).unwrap();
        let mut y = gpu.zeros::<f32>(n).unwrap();
        gpu.begin_graph_pool().unwrap();
        let eager = gpu.uninit::<f32>(n).unwrap();
        gpu.recycle(eager);
        gpu.seal_graph_pool();
        gpu.synchronize().unwrap();
        gpu.begin_recording().unwrap();
        add(&gpu, &x, &x, &mut y).unwrap();
        let handed = gpu.uninit::<f32>(n).unwrap();
        drop(handed);
        let asked = gpu.uninit::<f32>(2 * n);
        eprintln!("a size the sealed pool does not hold: {:?}", asked.as_ref().map(|_| ()));
        assert!(asked.is_err(), "the sealed pool handed out a buffer of a size it does not hold");
        let ended = gpu.end_recording(false, None);
        match &ended {
            Ok(Some(rec)) => eprintln!("recorded: {:?}", rec.node_counts()),
            Ok(None) => eprintln!("recorded nothing"),
            Err(e) => eprintln!("the recording failed: {e}"),
        }
        drop(gpu.end_graph_pool());
        assert!(gpu.recorded_tail().is_err(), "the stream is still recording");
        if let Ok(Some(rec)) = &ended {
            let counts = rec.node_counts().unwrap();
            assert_eq!(
                counts,
                [("kernel", 1)].into(),
                "a recording that frees memory it did not allocate"
            );
        }
        let b = gpu.upload(&vec![2.0f32; n]).unwrap();
        add(&gpu, &x, &b, &mut y).unwrap();
        assert_eq!(gpu.download(&y).unwrap(), vec![3.0f32; n]);
    }
}
