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
