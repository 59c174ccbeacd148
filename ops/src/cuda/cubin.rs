//! Precompiled CUBINs, as a compiled artifact carries them: one per kernel source, keyed by the source's file,
//! the architecture and a stable hash of the full text NVRTC compiles, so that a [`super::Gpu`] loads them with
//! no NVRTC and never loads a CUBIN built from a different source.

use super::{full_source, Source};
use std::collections::BTreeMap;

/// Every kernel source of this crate; a lowered graph launches kernels from these files only.
pub fn all_sources() -> Vec<Source> {
    vec![
        crate::act::cuda::SOURCE,
        crate::dynamic_mask::cuda::SOURCE,
        crate::elementwise::cuda::SOURCE,
        crate::embedding::cuda::SOURCE,
        crate::expert_mix::cuda::SOURCE,
        crate::inner_values::cuda::SOURCE,
        crate::logits_topk::cuda::SOURCE,
        crate::masked_attention::cuda::SOURCE,
        crate::matmul::cuda::SOURCE,
        crate::norm_rope::cuda::SOURCE,
        crate::pk_topk::cuda::SOURCE,
        crate::rms_norm::cuda::SOURCE,
        crate::rope::cuda::SOURCE,
        crate::router_topk::cuda::SOURCE,
        crate::ssd_scan::cuda::CHUNK_SCAN_SOURCE,
        crate::ssd_scan::cuda::STEP_SOURCE,
    ]
}

/// FNV-1a (64 bit) of `bytes`: stable across builds, platforms and Rust versions, unlike `DefaultHasher`.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Stable hash of the text NVRTC compiles for `src` (the common header, then the source).
pub fn source_hash(src: &Source) -> u64 {
    fnv1a64(full_source(src).as_bytes())
}

/// `{stem}-{arch}-{source hash:016x}`: the key (and file stem) of the CUBIN of `src` for `arch`.
pub fn cubin_key(src: &Source, arch: &str) -> String {
    format!("{}-{arch}-{:016x}", src.file.trim_end_matches(".cu"), source_hash(src))
}

/// CUBINs for one architecture, by key ([`cubin_key`]).
#[derive(Clone, Debug, Default)]
pub struct CubinSet {
    arch: String,
    cubins: BTreeMap<String, Vec<u8>>,
}

impl CubinSet {
    /// An empty set for `arch` (`sm_90`).
    pub fn new(arch: &str) -> CubinSet {
        CubinSet { arch: arch.to_string(), cubins: BTreeMap::new() }
    }

    /// The architecture the CUBINs were compiled for.
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// Adds the CUBIN stored under `key`.
    pub fn insert(&mut self, key: String, cubin: Vec<u8>) {
        self.cubins.insert(key, cubin);
    }

    /// The CUBIN of `src` for `arch`, when the set holds one built from exactly this source.
    pub fn get(&self, src: &Source, arch: &str) -> Option<&[u8]> {
        if arch != self.arch {
            return None;
        }
        self.cubins.get(&cubin_key(src, arch)).map(Vec::as_slice)
    }

    /// Number of CUBINs.
    pub fn len(&self) -> usize {
        self.cubins.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.cubins.is_empty()
    }

    /// The kernel sources of this crate that have no CUBIN in the set (absent, or built from another source).
    pub fn missing(&self) -> Vec<&'static str> {
        all_sources().iter().filter(|s| self.get(s, &self.arch).is_none()).map(|s| s.file).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stable_and_follow_the_source() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        let a = Source { file: "x.cu", code: "extern \"C\" __global__ void k() {}" };
        let b = Source { file: "x.cu", code: "extern \"C\" __global__ void k() { }" };
        assert_ne!(cubin_key(&a, "sm_90"), cubin_key(&b, "sm_90"));
        assert!(cubin_key(&a, "sm_90").starts_with("x-sm_90-"));
        let mut set = CubinSet::new("sm_90");
        set.insert(cubin_key(&a, "sm_90"), vec![1, 2]);
        assert_eq!(set.get(&a, "sm_90"), Some(&[1u8, 2][..]));
        assert_eq!(set.get(&b, "sm_90"), None);
        assert_eq!(set.get(&a, "sm_80"), None);
        let files: Vec<&str> = all_sources().iter().map(|s| s.file).collect();
        let mut sorted = files.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), files.len(), "kernel files must be unique: {files:?}");
        assert_eq!(set.missing().len(), files.len());
    }
}
