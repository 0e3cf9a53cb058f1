use super::*;

/// `n` rows of a zero-mean Gaussian in `eigenvalues.len()` dimensions whose covariance has these
/// eigenvalues, in a random orthonormal basis.
pub(crate) fn gaussian(n: usize, eigenvalues: &[f64], seed: u64) -> Vec<f32> {
    let dim = eigenvalues.len();
    let mut rng = Rng::new(seed);
    let basis = linalg::orthonormalize(linalg::gaussian_matrix(dim, dim, &mut rng).as_ref());
    let mut out = Vec::with_capacity(n * dim);
    for _ in 0..n {
        let z: Vec<f64> = eigenvalues
            .iter()
            .map(|&l| rng.normal() * l.sqrt())
            .collect();
        for c in 0..dim {
            out.push((0..dim).map(|j| basis[(c, j)] as f64 * z[j]).sum::<f64>() as f32);
        }
    }
    out
}

fn mse(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum::<f64>()
        / a.len() as f64
}

#[test]
fn bit_packing_round_trips() {
    for bits in [0u32, 1, 3, 8, 13, 32] {
        let values: Vec<u32> = (0..37u64)
            .map(|i| ((i * 2654435761) & ((1u64 << bits) - 1)) as u32)
            .collect();
        let packed = pack_bits(&values, bits);
        assert_eq!(packed.len(), (37 * bits as usize).div_ceil(8));
        assert_eq!(unpack_bits(&packed, 37, bits).unwrap(), values);
        assert!(
            unpack_bits(&packed[..packed.len().saturating_sub(1)], 37, bits).is_err() || bits == 0
        );
    }
}

#[test]
fn water_filling_rate_and_distortion_are_inverse() {
    let eig = [4.0, 2.0, 1.0, 0.5, 0.1, 0.01];
    for rate in [0.1, 0.5, 1.0, 2.0, 4.0] {
        let d = gaussian_distortion(&eig, rate);
        assert!((gaussian_rate(&eig, d) - rate).abs() < 1e-6, "{rate}");
    }
    // At high rate every component is coded: R = 0.5 log2(geomean(lambda) / D).
    let geomean = eig.iter().map(|l: &f64| l.ln()).sum::<f64>() / eig.len() as f64;
    let d = 1e-4;
    let r = 0.5 * (geomean.exp() / d).log2();
    assert!((gaussian_rate(&eig, d) - r).abs() < 1e-6);
    let alloc = water_filling_allocation(&eig, d);
    assert!((alloc.iter().sum::<f64>() / 6.0 - r).abs() < 1e-6);
}

#[test]
fn stats_find_the_covariance_eigenvalues() {
    let eig = [9.0, 4.0, 1.0, 0.25];
    let x = gaussian(20000, &eig, 1);
    let s = Stats::of(&x, Shape2::new(20000, 4)).unwrap();
    for (got, want) in s.eigenvalues.iter().zip(eig) {
        assert!((got / want - 1.0).abs() < 0.05, "{got} vs {want}");
    }
}

#[test]
fn transform_decodes_to_its_reconstruction_and_tracks_the_water_level() {
    let eig = [4.0, 2.0, 1.0, 0.5, 0.25, 0.1, 0.05, 0.01];
    let shape = Shape2::new(3000, 8);
    let x = gaussian(shape.rows, &eig, 2);
    let stats = Stats::of(&x, shape).unwrap();
    for rate in [1.0, 3.0] {
        let theta = water_level_for_rate(&stats.eigenvalues, rate);
        let p = transform::params_for_level(&stats, theta);
        let (enc, _) = transform::encode(&x, shape, &stats, &p).unwrap();
        let dec = transform::decode(&enc.bytes, shape, &p).unwrap();
        assert_eq!(dec, enc.reconstruction);
        // Measured MSE near the reverse water-filling distortion (uniform quantizer: step^2/12
        // per coded component; low-rate components do a little better or worse).
        let want = gaussian_distortion(&stats.eigenvalues, rate);
        let got = mse(&x, &dec);
        assert!(
            got < 1.3 * want && got > 0.6 * want,
            "rate {rate}: {got} vs {want}"
        );
    }
}

#[test]
fn pq_decodes_to_its_reconstruction() {
    let eig = [4.0, 2.0, 1.0, 0.5, 0.25, 0.1];
    let shape = Shape2::new(500, 6);
    let x = gaussian(shape.rows, &eig, 3);
    for (m, k) in [(3, 16), (4, 4), (6, 2)] {
        let p = pq::Params {
            m,
            k,
            iters: 10,
            seed: 7,
            codebook_bits: 8,
        };
        let (enc, extras) = pq::encode(&x, shape, &p).unwrap();
        assert_eq!(extras.coordinate_bits.len(), 6);
        let dec = pq::decode(&enc.bytes, shape, &p).unwrap();
        assert_eq!(dec, enc.reconstruction);
        assert!(mse(&x, &dec) < 1.3, "m{m} k{k}");
        // Same input, same bytes.
        assert_eq!(pq::encode(&x, shape, &p).unwrap().0.bytes, enc.bytes);
    }
}

#[test]
fn recall_is_one_on_the_data_itself_and_falls_with_noise() {
    let eig = [4.0, 2.0, 1.0, 0.5];
    let shape = Shape2::new(800, 4);
    let x = gaussian(shape.rows, &eig, 5);
    let q = RecallQueries::sample(&x, shape, 50, 1);
    assert_eq!(q.rows.len(), 50);
    assert_eq!(q.recall(&x, shape), Some(1.0));
    let mut rng = Rng::new(6);
    let noisy: Vec<f32> = x.iter().map(|&v| v + 0.5 * rng.normal() as f32).collect();
    let r = q.recall(&noisy, shape).unwrap();
    assert!(r < 0.9 && r > 0.05, "{r}");
}

#[test]
fn transform_with_fewer_components_and_a_gain_round_trips() {
    let eig = [4.0, 2.0, 1.0, 0.5, 0.25, 0.1, 0.05, 0.01];
    let shape = Shape2::new(2000, 8);
    let x = gaussian(shape.rows, &eig, 12);
    let stats = Stats::of(&x, shape).unwrap();
    let theta = water_level_for_rate(&stats.eigenvalues, 1.0);
    let plain = transform::params_for_level(&stats, theta);
    let few = transform::Params {
        keep_factor: 4.0,
        gain: 1.2,
        ..plain.clone()
    };
    assert!(few.kept(&stats.eigenvalues) < plain.kept(&stats.eigenvalues));
    let (a, _) = transform::encode(&x, shape, &stats, &plain).unwrap();
    let (b, _) = transform::encode(&x, shape, &stats, &few).unwrap();
    assert_eq!(
        transform::decode(&b.bytes, shape, &few).unwrap(),
        b.reconstruction
    );
    // Fewer components: fewer bytes; the gain moves the reconstruction away from the MSE optimum.
    assert!(b.bytes.len() < a.bytes.len());
    assert!(mse(&x, &b.reconstruction) > mse(&x, &a.reconstruction));
    // The gain scales the decoded coefficients about the mean, nothing else.
    let unit = transform::Params {
        gain: 1.0,
        ..few.clone()
    };
    let (c, _) = transform::encode(&x, shape, &stats, &unit).unwrap();
    assert_eq!(
        c.bytes, b.bytes,
        "the gain lives in the header, not the section"
    );
    for (t, (&g, &u)) in b.reconstruction.iter().zip(&c.reconstruction).enumerate() {
        let m = stats.mean[t % 8] as f32;
        assert!((g - (m + 1.2 * (u - m))).abs() < 1e-4, "{t}: {g} vs {u}");
    }
    // Out-of-range parameters are typed errors.
    for bad in [
        transform::Params {
            keep_factor: 0.5,
            ..few.clone()
        },
        transform::Params {
            gain: 0.0,
            ..few.clone()
        },
        transform::Params {
            gain: f32::NAN,
            ..few.clone()
        },
    ] {
        assert!(matches!(
            transform::decode(&b.bytes, shape, &bad),
            Err(Error::Corrupt { .. })
        ));
    }
}

#[test]
fn transform_params_without_the_new_fields_read_as_water_filling() {
    // Files written before keep_factor and gain existed carry neither field.
    let p: transform::Params = serde_json::from_str(r#"{"step":0.5,"basis_bits":8}"#).unwrap();
    assert_eq!((p.keep_factor, p.gain), (1.0, 1.0));
    // And the defaults are not written, so such headers stay byte-identical.
    assert_eq!(
        serde_json::to_string(&p).unwrap(),
        r#"{"step":0.5,"basis_bits":8}"#
    );
}

#[test]
fn encode_options_measures_recall_and_keeps_a_gain_only_when_it_helps() {
    let eig: Vec<f64> = (0..24).map(|i| 0.85f64.powi(i)).collect();
    let shape = Shape2::new(3000, 24);
    let x = gaussian(shape.rows, &eig, 13);
    let stats = Stats::of(&x, shape).unwrap();
    let queries = RecallQueries::sample(&x, shape, 200, 3);
    let cpu = crate::backend::Backend::Cpu;
    let options = crate::backend::ready(encode_options(
        &cpu,
        &x,
        shape,
        &stats,
        Some(Method::Transform),
        1,
        Some(&queries),
    ))
    .unwrap();
    assert!(options.iter().all(|o| o.measure.recall_at_10.is_some()));
    let mut previous: Option<(&transform::Params, f64)> = None;
    for o in &options {
        let CodecParams::Transform(p) = &o.codec else {
            panic!("only transform options were asked for")
        };
        let recall = o.measure.recall_at_10.unwrap();
        // A gain option follows its gain-1 option and was kept because it ranks better there.
        if p.gain != 1.0 {
            let (base, base_recall) = previous.expect("a gain option follows its base");
            assert_eq!((base.step, base.keep_factor), (p.step, p.keep_factor));
            assert!(recall > base_recall, "{recall} vs {base_recall}");
        }
        previous = Some((p, recall));
    }
    // Without queries: no recall, no gain options.
    let plain = crate::backend::ready(encode_options(
        &cpu,
        &x,
        shape,
        &stats,
        Some(Method::Transform),
        1,
        None,
    ))
    .unwrap();
    assert!(plain.iter().all(|o| o.measure.recall_at_10.is_none()));
    assert!(plain
        .iter()
        .all(|o| matches!(&o.codec, CodecParams::Transform(p) if p.gain == 1.0)));
}

/// Rows from `means.len()` Gaussians in `eig.len()` dimensions, each with its own mean (the same in
/// every coordinate) and its own random basis for the eigenvalues `eig`, row `i` from Gaussian
/// `i % means.len()`.
fn mixture_data(rows: usize, means: &[f32], eig: &[f64], seed: u64) -> Vec<f32> {
    let dim = eig.len();
    let parts: Vec<Vec<f32>> = (0..means.len())
        .map(|c| gaussian(rows / means.len() + 1, eig, seed + c as u64))
        .collect();
    (0..rows)
        .flat_map(|i| {
            let c = i % means.len();
            let row = &parts[c][(i / means.len()) * dim..(i / means.len() + 1) * dim];
            row.iter().map(move |&v| v + means[c]).collect::<Vec<f32>>()
        })
        .collect()
}

#[test]
fn a_mixture_codes_clustered_data_in_fewer_bits_and_round_trips() {
    // Three well separated clusters, each flat in a different 8-D orientation: one Gaussian sees
    // a nearly isotropic cloud, the mixture three elongated ones.
    let eig = [9.0, 4.0, 1.0, 0.3, 0.1, 0.05, 0.02, 0.01];
    let shape = Shape2::new(12000, 8);
    let x = mixture_data(shape.rows, &[-40.0, 0.0, 40.0], &eig, 30);
    let stats = Stats::of(&x, shape).unwrap();
    let backend = crate::backend::Backend::Cpu;
    let mixture = crate::backend::block_on(fit_mixture(&backend, &x, shape, 3, 7)).unwrap();
    let step = (12.0f64 * 0.01).sqrt() as f32;
    let single = transform::Params {
        step,
        ..transform::params_for_level(&stats, 0.01)
    };
    let mixed = transform::Params {
        clusters: 3,
        seed: 7,
        ..single.clone()
    };
    let (a, _) = transform::encode(&x, shape, &stats, &single).unwrap();
    let (b, extras) = transform::encode_mixture(&x, shape, &mixture, &mixed).unwrap();
    // Same step, so about the same error; the mixture in far fewer bits (each cluster's two
    // dominant directions are its own).
    let (da, db) = (mse(&x, &a.reconstruction), mse(&x, &b.reconstruction));
    assert!(db < 1.2 * da, "mse {db} vs {da}");
    assert!(
        (b.bytes.len() as f64) < 0.8 * a.bytes.len() as f64,
        "{} vs {} bytes",
        b.bytes.len(),
        a.bytes.len()
    );
    assert!(b.side_bytes > 0 && b.side_bytes < b.bytes.len());
    assert_eq!(extras.component_bits.len(), 8);
    let decoded = CodecParams::Transform(mixed.clone())
        .decode(&b.bytes, shape)
        .unwrap();
    assert_eq!(decoded, b.reconstruction);
    // Same input, same bytes.
    let again = crate::backend::block_on(fit_mixture(&backend, &x, shape, 3, 7)).unwrap();
    assert_eq!(
        transform::encode_mixture(&x, shape, &again, &mixed)
            .unwrap()
            .0
            .bytes,
        b.bytes
    );
    // The section and the header must agree on the model.
    for wrong in [1, 2, 4] {
        let p = transform::Params {
            clusters: wrong,
            ..mixed.clone()
        };
        assert!(transform::decode(&b.bytes, shape, &p).is_err());
    }
    assert!(transform::decode(&a.bytes, shape, &mixed).is_err());
    let mut rng = Rng::new(31);
    let mixed = CodecParams::Transform(mixed);
    crate::codec::tests::assert_damage_is_refused(&mixed, &b.bytes, shape, &mut rng);
}

#[test]
fn mixture_options_are_offered_only_where_they_pay_off() {
    // Too few rows for a covariance per cluster; two separated clusters (a mixture codes them
    // better); one Gaussian (the mixture's extra bases and labels buy nothing, so none is offered).
    let eig = [4.0, 2.0, 1.0, 0.5];
    let backend = crate::backend::Backend::Cpu;
    for (rows, means, want_mixtures) in [
        (24, &[-10.0, 10.0][..], false),
        (4000, &[-10.0, 10.0][..], true),
        (4000, &[0.0][..], false),
    ] {
        let shape = Shape2::new(rows, 4);
        let x = mixture_data(rows, means, &eig, 40);
        let stats = Stats::of(&x, shape).unwrap();
        let options = crate::backend::block_on(encode_options(
            &backend,
            &x,
            shape,
            &stats,
            Some(Method::Transform),
            1,
            None,
        ))
        .unwrap();
        let mixtures = options
            .iter()
            .filter(|o| matches!(&o.codec, CodecParams::Transform(p) if p.clusters > 1))
            .count();
        assert_eq!(mixtures > 0, want_mixtures, "{rows} rows, means {means:?}");
        for o in &options {
            assert_eq!(
                o.codec.decode(&o.encoded.bytes, shape).unwrap(),
                o.encoded.reconstruction
            );
        }
    }
}
