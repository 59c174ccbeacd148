use proptest::prelude::*;

use super::*;
use crate::testutil::Rng;
use crate::KernelError;

fn reference(table: &[f32], dim: usize, ids: &[i64]) -> Vec<f32> {
    let mut y = Vec::new();
    for &id in ids {
        for d in 0..dim {
            y.push(table[id as usize * dim + d]);
        }
    }
    y
}

fn check(rows: usize, dim: usize, n: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let table = rng.vec(rows * dim, -1.0, 1.0);
    let ids: Vec<i64> = (0..n).map(|_| rng.below(rows) as i64).collect();
    let got = gather(&table, rows, dim, &ids).unwrap();
    assert_eq!(got, reference(&table, dim, &ids), "gather rows={rows} dim={dim} n={n}");
}

#[test]
fn edge_shapes() {
    for (i, &(rows, dim, n)) in
        [(1, 1, 0), (1, 1, 1), (5, 0, 3), (3, 7, 10), (40, 31, 33), (40, 32, 32), (40, 33, 31)]
            .iter()
            .enumerate()
    {
        check(rows, dim, n, i as u64);
    }
    assert!(gather(&[], 0, 4, &[]).unwrap().is_empty());
}

#[test]
fn bad_ids_are_named_with_their_position() {
    let table = [0.0; 6];
    for (ids, want) in [(vec![0, 2, 3], "`ids[2]` = 3"), (vec![1, -1], "`ids[1]` = -1")] {
        let Err(KernelError::BadParams(msg)) = gather(&table, 3, 2, &ids) else {
            panic!("accepted {ids:?}")
        };
        assert!(msg.contains(want) && msg.contains("3 rows"), "{msg}");
    }
    let Err(KernelError::BadParams(msg)) = gather(&table, 4, 2, &[0]) else { panic!() };
    assert!(msg.contains("`table` has 6 elements, expected 8"), "{msg}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn random(rows in 1usize..50, dim in 0usize..70, n in 0usize..60, seed: u64) {
        check(rows, dim, n, seed);
    }
}

/// CUDA against the CPU kernel: a gather copies, so the rows must be equal bit for bit.
mod gpu {
    use super::*;
    use crate::cuda::{test_gpu, Elem, Gpu};

    fn run<T: Elem>(
        gpu: &Gpu,
        table: &[T],
        rows: usize,
        dim: usize,
        ids: &[i64],
    ) -> crate::Result<Vec<T>> {
        let dt = gpu.upload(table)?;
        let di = gpu.stream().clone_htod(ids).unwrap();
        let mut y = gpu.upload(&vec![T::from_f32(f32::NAN); ids.len() * dim])?;
        cuda::gather(gpu, &dt, rows, dim, &di, &mut y)?;
        gpu.download(&y)
    }

    fn check(rows: usize, dim: usize, n: usize, seed: u64) {
        let Some(gpu) = test_gpu() else { return };
        let mut rng = Rng::new(seed);
        let table = rng.vec(rows * dim, -1.0, 1.0);
        let ids: Vec<i64> = (0..n).map(|_| rng.below(rows) as i64).collect();
        let want = gather(&table, rows, dim, &ids).unwrap();
        let got = run(&gpu, &table, rows, dim, &ids).unwrap();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got), bits(&want), "embedding_f32 rows={rows} dim={dim} n={n}");
        check_narrow::<half::bf16>(&gpu, &table, rows, dim, &ids);
        check_narrow::<half::f16>(&gpu, &table, rows, dim, &ids);
    }

    fn check_narrow<T: Elem + PartialEq + std::fmt::Debug>(
        gpu: &Gpu,
        table: &[f32],
        rows: usize,
        dim: usize,
        ids: &[i64],
    ) {
        let table: Vec<T> = table.iter().map(|&x| T::from_f32(x)).collect();
        let wide: Vec<f32> = table.iter().map(|x| x.to_f32()).collect();
        let want: Vec<T> =
            gather(&wide, rows, dim, ids).unwrap().into_iter().map(T::from_f32).collect();
        let got = run(gpu, &table, rows, dim, ids).unwrap();
        assert_eq!(got, want, "embedding_{} rows={rows} dim={dim} n={}", T::NAME, ids.len());
    }

    #[test]
    fn edge_shapes_match_the_cpu_kernel() {
        let shapes = [
            (1, 1, 0),
            (5, 0, 3),
            (1, 1, 1),
            (3, 7, 10),
            (7, 8, 5),
            (40, 31, 33),
            (40, 32, 32),
            (40, 33, 31),
            (50, 1025, 20),
            (1000, 4096, 7),
        ];
        for (i, &(rows, dim, n)) in shapes.iter().enumerate() {
            check(rows, dim, n, 300 + i as u64);
        }
    }

    #[test]
    fn ids_out_of_range_give_nan_rows() {
        let Some(gpu) = test_gpu() else { return };
        let table: Vec<f32> = (0..12).map(|i| i as f32).collect();
        let got = run(&gpu, &table, 3, 4, &[0, 3, -1, 2]).unwrap();
        assert_eq!(&got[..4], &table[..4]);
        assert!(got[4..12].iter().all(|v| v.is_nan()), "{got:?}");
        assert_eq!(&got[12..], &table[8..]);
    }

    #[test]
    fn bad_sizes_are_refused() {
        let Some(gpu) = test_gpu() else { return };
        let Err(KernelError::BadParams(msg)) = run(&gpu, &[0.0f32; 6], 4, 2, &[0]) else {
            panic!()
        };
        assert!(msg.contains("`table` has 6 elements, expected 8"), "{msg}");
        let (table, ids) =
            (gpu.zeros::<f32>(8).unwrap(), gpu.stream().clone_htod(&[0i64, 1]).unwrap());
        let mut y = gpu.zeros::<f32>(3).unwrap();
        let r = cuda::gather(&gpu, &table, 4, 2, &ids, &mut y);
        assert!(matches!(r, Err(KernelError::BadParams(m)) if m.contains("`y` has 3")));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn random_shapes_match_the_cpu_kernel(
            rows in 1usize..200, dim in 0usize..700, n in 0usize..100, seed in any::<u64>(),
        ) {
            check(rows, dim, n, seed);
        }
    }
}
