//! The registry of WGSL kernels: every shader in `shaders/`, compiled into the binary, in one list
//! that the GPU backend builds its pipelines from and that the tests validate with naga. A new
//! kernel is added here and nowhere else.

/// One WGSL module and the compute entry points the backend uses from it.
#[derive(Clone, Copy, Debug)]
pub struct Shader {
    /// File name under `shaders/` (also the label of its pipelines).
    pub name: &'static str,
    pub source: &'static str,
    pub entry_points: &'static [&'static str],
}

pub const MATMUL: Shader = Shader {
    name: "matmul.wgsl",
    source: include_str!("../shaders/matmul.wgsl"),
    entry_points: &["main"],
};

pub const KMEANS_ASSIGN: Shader = Shader {
    name: "kmeans_assign.wgsl",
    source: include_str!("../shaders/kmeans_assign.wgsl"),
    entry_points: &["main"],
};

pub const KMEANS_UPDATE: Shader = Shader {
    name: "kmeans_update.wgsl",
    source: include_str!("../shaders/kmeans_update.wgsl"),
    entry_points: &["sum_chunks", "move_centroids"],
};

pub const FWHT: Shader = Shader {
    name: "fwht.wgsl",
    source: include_str!("../shaders/fwht.wgsl"),
    entry_points: &["main"],
};

pub const GROUP_FIT: Shader = Shader {
    name: "group_fit.wgsl",
    source: include_str!("../shaders/group_fit.wgsl"),
    entry_points: &["main"],
};

pub const HYPER: Shader = Shader {
    name: "hyper.wgsl",
    source: include_str!("../shaders/hyper.wgsl"),
    entry_points: &["main"],
};

// The model runtime's forward pass (model::device).

pub const LINEAR: Shader = Shader {
    name: "linear.wgsl",
    source: include_str!("../shaders/linear.wgsl"),
    entry_points: &["matvec", "tiled"],
};

pub const NORM: Shader = Shader {
    name: "norm.wgsl",
    source: include_str!("../shaders/norm.wgsl"),
    entry_points: &["rms_norm", "layer_norm"],
};

pub const ELEMENTWISE: Shader = Shader {
    name: "elementwise.wgsl",
    source: include_str!("../shaders/elementwise.wgsl"),
    entry_points: &["add", "swiglu", "gelu", "gelu_tanh"],
};

pub const ROPE: Shader = Shader {
    name: "rope.wgsl",
    source: include_str!("../shaders/rope.wgsl"),
    entry_points: &["main"],
};

pub const ATTENTION: Shader = Shader {
    name: "attention.wgsl",
    source: include_str!("../shaders/attention.wgsl"),
    entry_points: &["main"],
};

pub const POOL: Shader = Shader {
    name: "pool.wgsl",
    source: include_str!("../shaders/pool.wgsl"),
    entry_points: &["main"],
};

/// Every kernel, in the order the backend creates their pipelines.
pub const ALL: [Shader; 12] = [
    MATMUL,
    KMEANS_ASSIGN,
    KMEANS_UPDATE,
    FWHT,
    GROUP_FIT,
    HYPER,
    LINEAR,
    NORM,
    ELEMENTWISE,
    ROPE,
    ATTENTION,
    POOL,
];
