//! What several test files share.

use autoagent_evaluator::data::DatasetKind;
use autoagent_evaluator::nb201::Arch;
use autoagent_evaluator::net::Nb201Config;

/// A small network (C = 8, N = 1, a cell with convolutions, a skip and a pooling) for `kind`'s
/// images and classes: trains in seconds on a fixture.
pub fn small_net(kind: DatasetKind) -> Nb201Config {
    let (c, h, _) = kind.image_shape();
    Nb201Config {
        channels: 8,
        cells_per_stage: 1,
        in_channels: c,
        input_size: h,
        num_classes: kind.num_classes(),
        ..Nb201Config::new(Arch::parse("|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|skip_connect~0|none~1|avg_pool_3x3~2|").unwrap())
    }
}
