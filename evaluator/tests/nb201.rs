//! The NB201 space and network against the benchmark's own table (`shared/data/nb201/nb201.csv`):
//! isomorphism classes, parameter counts and FLOPs.

use std::collections::HashMap;
use std::path::PathBuf;

use autoagent_evaluator::nb201::{Arch, Op};
use autoagent_evaluator::net::{Model, Nb201Config};
use candle_core::{DType, Device, Tensor};
use rand::{seq::IndexedRandom, SeedableRng};

fn shared() -> PathBuf {
    match std::env::var_os("AUTOAGENT_SHARED") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"),
    }
}

struct Row {
    index: usize,
    arch: String,
    params_m: f64,
    flops_m: f64,
    iso_group: usize,
}

fn table() -> Vec<Row> {
    let path = shared().join("nb201/nb201.csv");
    let mut rdr = csv::Reader::from_path(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let headers = rdr.headers().unwrap().clone();
    let col = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let (i, a, p, f, g) = (col("arch_index"), col("arch_str"), col("params_M"), col("flops_M"), col("iso_group"));
    let rows: Vec<Row> = rdr
        .records()
        .map(|r| {
            let r = r.unwrap();
            Row {
                index: r[i].parse().unwrap(),
                arch: r[a].to_string(),
                params_m: r[p].parse().unwrap(),
                flops_m: r[f].parse().unwrap(),
                iso_group: r[g].parse().unwrap(),
            }
        })
        .collect();
    assert_eq!(rows.len(), 15_625);
    rows
}

#[test]
fn every_table_arch_string_round_trips() {
    let rows = table();
    let mut seen = std::collections::HashSet::new();
    for row in &rows {
        let arch = Arch::parse(&row.arch).unwrap();
        assert_eq!(arch.to_string(), row.arch);
        assert!(seen.insert(arch), "duplicate arch {}", row.arch);
    }
    assert_eq!(seen.len(), 15_625);
}

#[test]
fn canonical_form_splits_the_space_into_the_benchmarks_6466_classes() {
    let rows = table();
    let mut canon_to_group: HashMap<String, usize> = HashMap::new();
    let mut group_to_canon: HashMap<usize, String> = HashMap::new();
    for row in &rows {
        let c = Arch::parse(&row.arch).unwrap().canonical();
        let g = *canon_to_group.entry(c.clone()).or_insert(row.iso_group);
        assert_eq!(g, row.iso_group, "arch {} ({}) merged with group {g}", row.index, row.arch);
        let c2 = group_to_canon.entry(row.iso_group).or_insert(c.clone());
        assert_eq!(*c2, c, "group {} split: {}", row.iso_group, row.arch);
    }
    assert_eq!(canon_to_group.len(), 6_466);
    assert_eq!(group_to_canon.len(), 6_466);
}

#[test]
fn no_path_cells_are_the_341_chance_level_ones() {
    let n = Arch::all().filter(|a| !a.has_path()).count();
    assert_eq!(n, 341);
}

#[test]
fn closed_form_params_and_flops_match_the_table_for_every_arch() {
    for row in table() {
        let cfg = Nb201Config::new(Arch::parse(&row.arch).unwrap());
        let params = cfg.param_count() as f64;
        assert!((params - row.params_m * 1e6).abs() < 0.5, "{}: params {params} vs {}", row.arch, row.params_m);
        let flops = cfg.flops();
        assert!(
            (flops / 1e6 - row.flops_m).abs() < 1e-6,
            "{}: flops {} vs {}",
            row.arch,
            flops / 1e6,
            row.flops_m
        );
    }
}

#[test]
fn built_networks_allocate_exactly_the_tables_parameters() {
    let rows = table();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2024);
    let mut sample: Vec<&Row> = rows.choose_multiple(&mut rng, 300).collect();
    // Edge cases: all-none, all-skip, all-pool, all-conv1x1, all-conv3x3 (the largest), the best.
    let extremes: Vec<String> = Op::ALL.iter().map(|&op| Arch::new([op; 6]).to_string()).collect();
    for row in &rows {
        if extremes.contains(&row.arch) || row.index == 6111 {
            sample.push(row);
        }
    }
    assert_eq!(sample.len(), 306);
    for row in sample {
        let cfg = Nb201Config::new(Arch::parse(&row.arch).unwrap());
        let model = Model::new(&cfg, DType::F32, &Device::Cpu, 0).unwrap();
        let n = model.param_count();
        assert_eq!(n as f64, (row.params_m * 1e6).round(), "{} ({})", row.index, row.arch);
        assert_eq!(n, cfg.param_count());
    }
}

#[test]
fn conv_free_network_has_the_papers_73306_parameters_and_runs() {
    let arch = Arch::new([Op::SkipConnect; 6]);
    let cfg = Nb201Config::new(arch);
    let model = Model::new(&cfg, DType::F32, &Device::Cpu, 1).unwrap();
    assert_eq!(model.param_count(), 73_306);
    let xs = Tensor::randn(0f32, 1.0, (2, 3, 32, 32), &Device::Cpu).unwrap();
    let logits = model.net.forward_t(&xs, false).unwrap();
    assert_eq!(logits.dims(), &[2, 10]);
}

#[test]
fn network_shape_is_parametrised() {
    // CIFAR-100 head, ImageNet16-sized input, a narrower and shallower network, MNIST's 1 channel.
    let arch = Arch::parse("|nor_conv_3x3~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|skip_connect~0|none~1|nor_conv_3x3~2|").unwrap();
    for (c, n, classes, cin, size) in [(16, 5, 100, 3, 32), (16, 5, 120, 3, 16), (8, 1, 10, 3, 32), (8, 2, 10, 1, 28)] {
        let cfg = Nb201Config {
            arch,
            channels: c,
            cells_per_stage: n,
            num_classes: classes,
            in_channels: cin,
            input_size: size,
        };
        let model = Model::new(&cfg, DType::F32, &Device::Cpu, 3).unwrap();
        assert_eq!(model.param_count(), cfg.param_count());
        let xs = Tensor::randn(0f32, 1.0, (3, cin, size, size), &Device::Cpu).unwrap();
        let logits = model.net.forward_t(&xs, true).unwrap();
        assert_eq!(logits.dims(), &[3, classes]);
        let v: Vec<f32> = logits.flatten_all().unwrap().to_vec1().unwrap();
        assert!(v.iter().all(|x| x.is_finite()));
    }
    let bad = Nb201Config {
        arch,
        channels: 0,
        cells_per_stage: 5,
        num_classes: 10,
        in_channels: 3,
        input_size: 32,
    };
    assert!(Model::new(&bad, DType::F32, &Device::Cpu, 0).is_err());
}

#[test]
fn initialisation_is_seeded() {
    let cfg = Nb201Config::new(Arch::parse("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|").unwrap());
    let xs = Tensor::randn(0f32, 1.0, (4, 3, 32, 32), &Device::Cpu).unwrap();
    let run = |seed| {
        let m = Model::new(&cfg, DType::F32, &Device::Cpu, seed).unwrap();
        m.net.forward_t(&xs, true).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()
    };
    assert_eq!(run(5), run(5));
    assert_ne!(run(5), run(6));
}

#[test]
fn fused_per_op_and_composite_kernels_agree_on_outputs_gradients_and_running_stats() {
    use autoagent_evaluator::net::{BnMode, Kernels};
    let archs = [
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|",
        "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|",
        // node 1 has no input (none), yet feeds a convolution: BN of zeros is β.
        "|none~0|+|skip_connect~0|nor_conv_3x3~1|+|nor_conv_1x1~0|avg_pool_3x3~1|nor_conv_3x3~2|",
        "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|",
        "|avg_pool_3x3~0|+|avg_pool_3x3~0|avg_pool_3x3~1|+|avg_pool_3x3~0|avg_pool_3x3~1|avg_pool_3x3~2|",
        // nodes 0 and 1 each feed a 3×3 and a 1×1 convolution (the fused cell groups a node's
        // outgoing convolutions by kernel size, sharing their im2col)
        "|nor_conv_3x3~0|+|nor_conv_1x1~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_1x1~1|skip_connect~2|",
        // node 1 is computed (a 3×3 convolution of node 0) but read by nobody: its edge has no
        // gradient, while the other 3×3 edge leaving node 0 has one
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|nor_conv_1x1~0|none~1|nor_conv_3x3~2|",
    ];
    for arch in archs {
        let cfg = Nb201Config {
            channels: 4,
            cells_per_stage: 2,
            num_classes: 5,
            input_size: 8,
            ..Nb201Config::new(Arch::parse(arch).unwrap())
        };
        let xs = Tensor::randn(0f64, 1.0, (3, 3, 8, 8), &Device::Cpu).unwrap();
        let ys = Tensor::new(&[0u32, 3, 4], &Device::Cpu).unwrap();
        let mut results = Vec::new();
        for k in [Kernels::Fused, Kernels::PerOp, Kernels::Composite] {
            let mut model = Model::new(&cfg, DType::F64, &Device::Cpu, 9).unwrap();
            model.net.set_kernels(k);
            let logits = model.net.forward_mode(&xs, BnMode::Train).unwrap();
            let loss = candle_nn::loss::cross_entropy(&logits, &ys).unwrap();
            let grads = loss.backward().unwrap();
            let mut values: Vec<(String, Vec<f64>)> = vec![("logits".into(), logits.flatten_all().unwrap().to_vec1().unwrap())];
            for (name, var) in model.trainable() {
                let g = grads.get(var.as_tensor()).map(|g| g.flatten_all().unwrap().to_vec1::<f64>().unwrap());
                values.push((format!("grad {name}"), g.unwrap_or_else(|| vec![0.0; var.elem_count()])));
            }
            let data = model.varmap.data().lock().unwrap();
            let mut stats: Vec<_> = data.iter().filter(|(n, _)| n.contains("running")).collect();
            stats.sort_by(|a, b| a.0.cmp(b.0));
            for (name, v) in stats {
                values.push((name.clone(), v.flatten_all().unwrap().to_vec1().unwrap()));
            }
            results.push(values);
        }
        for other in &results[1..] {
            assert_eq!(results[0].len(), other.len());
            for ((name, a), (_, b)) in results[0].iter().zip(other) {
                for (x, y) in a.iter().zip(b) {
                    assert!((x - y).abs() < 1e-9 * (1.0 + x.abs()), "{arch}: {name}: {x} vs {y}");
                }
            }
        }
    }
}

#[test]
fn fused_cells_agree_with_the_composite_form_in_f32() {
    // f32 takes the AVX-512 paths (sgemm, masked im2col) where the CPU has them; the f64 test
    // above checks the algebra, this one the f32 kernels, on every NB201 edge type.
    use autoagent_evaluator::net::{BnMode, Kernels};
    let archs = [
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|",
        "|avg_pool_3x3~0|+|nor_conv_1x1~0|nor_conv_3x3~1|+|nor_conv_3x3~0|skip_connect~1|avg_pool_3x3~2|",
    ];
    for arch in archs {
        let cfg = Nb201Config {
            channels: 8,
            cells_per_stage: 1,
            num_classes: 10,
            input_size: 16,
            ..Nb201Config::new(Arch::parse(arch).unwrap())
        };
        // A seeded input: with candle's unseeded `randn` the comparison failed on about 1 input
        // in 15 (a BatchNorm bias gradient 2.6e-3 apart relative to its largest entry, on the
        // im2col path as on the implicit one: f32 sums in different orders), so CI was flaky.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(17);
        let vals: Vec<f32> = (0..5 * 3 * 16 * 16).map(|_| rand::Rng::random_range(&mut rng, -1.7f32..1.7)).collect();
        let xs = Tensor::from_vec(vals, (5, 3, 16, 16), &Device::Cpu).unwrap();
        let ys = Tensor::new(&[0u32, 3, 4, 9, 1], &Device::Cpu).unwrap();
        let mut results = Vec::new();
        for k in [Kernels::Fused, Kernels::Composite] {
            let mut model = Model::new(&cfg, DType::F32, &Device::Cpu, 3).unwrap();
            model.net.set_kernels(k);
            let logits = model.net.forward_mode(&xs, BnMode::Train).unwrap();
            let grads = candle_nn::loss::cross_entropy(&logits, &ys).unwrap().backward().unwrap();
            let mut values: Vec<(String, Vec<f32>)> = vec![("logits".into(), logits.flatten_all().unwrap().to_vec1().unwrap())];
            for (name, var) in model.trainable() {
                let g = grads.get(var.as_tensor()).map(|g| g.flatten_all().unwrap().to_vec1::<f32>().unwrap());
                values.push((format!("grad {name}"), g.unwrap_or_else(|| vec![0.0; var.elem_count()])));
            }
            results.push(values);
        }
        for ((name, a), (_, b)) in results[0].iter().zip(&results[1]) {
            let scale = a.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-4);
            let worst = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
            assert!(worst <= 1e-3 * scale, "{arch}: {name}: max difference {worst} against magnitude {scale}");
        }
    }
}
