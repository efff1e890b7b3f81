//! CPU kernels for Vitrine's CLIP encoder.
//!
//! The one crate of the workspace with `unsafe` code: SIMD intrinsics and raw output
//! pointers shared by threads that write disjoint tiles. Every public function is safe
//! and checks the bounds of what it is given before any unsafe kernel runs.
//!
//! The core is a GEMM `C = A · Bᵀ (+ bias)` whose `B` (a weight matrix in the
//! `[out, in]` layout of a linear layer) is packed once, at model load, into panels of
//! [`NR`] output columns stored `k`-major, in f32 or bf16 ([`Precision`]); `A` is packed
//! per call into panels of [`MR`] rows. One register tile is `MR × NR`, and the epilogue
//! (bias, quick-GELU, residual add) runs on it while it is still in registers.
//!
//! Four instruction sets share that packing ([`Isa`]): AVX-512F (16 lanes), AVX2+FMA and
//! NEON (8 and 4 lanes, covering the tile in sub-tiles of at most six rows and 16
//! columns), and [`Isa::Portable`], plain Rust, for other CPUs and as the reference in
//! tests.
#![allow(unsafe_code)]

mod avx2;
mod avx512;
mod neon;
#[macro_use]
mod ops;
mod portable;

pub use ops::{attention, exp_inplace, layer_norm, softmax_rows};

/// Output columns per packed panel (two 16-lane vectors).
pub const NR: usize = 32;
/// Rows per packed panel of `A` (the register tile's height).
pub const MR: usize = 14;
// The SIMD kernels' aligned loads rely on it: every `k`-row of a panel starts on a
// 64-byte line in bf16 (and so in f32), and 16-column halves on 32 bytes.
const _: () = assert!((NR * 2).is_multiple_of(64) && NR.is_multiple_of(16));

/// Instruction set a kernel runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// x86-64 AVX-512F.
    Avx512,
    /// x86-64 AVX2 with FMA (Haswell and later, AMD Zen 1 and later).
    Avx2,
    /// aarch64 Advanced SIMD (every 64-bit Arm CPU).
    Neon,
    /// Plain Rust; any CPU.
    Portable,
}

impl Isa {
    /// Every instruction set, fastest first.
    pub const ALL: [Isa; 4] = [Isa::Avx512, Isa::Avx2, Isa::Neon, Isa::Portable];

    /// The fastest instruction set this CPU supports.
    pub fn detect() -> Self {
        Self::ALL
            .into_iter()
            .find(|i| i.available())
            .unwrap_or(Self::Portable)
    }

    /// Every instruction set this CPU supports, fastest first (`Portable` last).
    pub fn supported() -> Vec<Self> {
        Self::ALL.into_iter().filter(|i| i.available()).collect()
    }

    /// Lower-case name: `avx512`, `avx2`, `neon`, `portable`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Avx512 => "avx512",
            Self::Avx2 => "avx2",
            Self::Neon => "neon",
            Self::Portable => "portable",
        }
    }

    /// The instruction set called `name` (see [`Isa::name`]; case-insensitive).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|i| i.name().eq_ignore_ascii_case(name.trim()))
    }

    /// Whether this CPU can run kernels for `self`.
    pub fn available(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Self::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "x86_64")]
            Self::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "aarch64")]
            Self::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            Self::Portable => true,
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// `self` if this CPU supports it, else a panic: kernels must never run unsupported
    /// instructions.
    fn checked(self) -> Self {
        assert!(self.available(), "{self:?} kernels are not supported by this CPU");
        self
    }
}

/// How a packed weight stores its values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Precision {
    /// 32-bit floats, as in the checkpoint.
    #[default]
    F32,
    /// bfloat16 (the top half of an f32, rounded to nearest even): half the bytes to
    /// stream, widened to f32 in registers; products and sums stay f32.
    Bf16,
}

impl Precision {
    /// Lower-case name: `f32`, `bf16`.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
        }
    }
}

/// `x` rounded to the nearest bfloat16 (ties to even); NaN stays NaN.
pub fn to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x40) as u16;
    }
    let rounded = bits.wrapping_add(0x7fff + ((bits >> 16) & 1));
    (rounded >> 16) as u16
}

/// The f32 a bfloat16 stands for (exact).
pub fn from_bf16(x: u16) -> f32 {
    f32::from_bits(u32::from(x) << 16)
}

/// 64-byte aligned, so packed panels start on a cache line.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Line([u8; 64]);

mod sealed {
    /// Element types an [`Aligned`](super::Aligned) buffer may hold: plain numbers for
    /// which the all-zero bit pattern is zero.
    pub trait Elem: Copy + std::fmt::Debug {}
    impl Elem for f32 {}
    impl Elem for u16 {}
}

/// A reusable, cache-line aligned buffer of `f32` (or `u16`, for bf16 panels).
#[derive(Clone)]
pub struct Aligned<T: sealed::Elem> {
    lines: Vec<Line>,
    len: usize,
    elem: std::marker::PhantomData<T>,
}

/// An aligned `f32` buffer: packing space and packed activations.
pub type AlignedBuf = Aligned<f32>;

impl<T: sealed::Elem> Default for Aligned<T> {
    fn default() -> Self {
        Self {
            lines: Vec::new(),
            len: 0,
            elem: std::marker::PhantomData,
        }
    }
}

impl<T: sealed::Elem> Aligned<T> {
    pub fn zeroed(len: usize) -> Self {
        let mut b = Self::default();
        b.reset(len);
        b
    }

    /// Resize to `len` zeros, keeping the allocation when it is large enough.
    pub fn reset(&mut self, len: usize) {
        let bytes = len
            .checked_mul(size_of::<T>())
            .unwrap_or_else(|| panic!("aligned buffer of {len} values overflows"));
        self.lines.clear();
        self.lines
            .resize(bytes.div_ceil(size_of::<Line>()), Line([0; 64]));
        self.len = len;
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_slice(&self) -> &[T] {
        // SAFETY: `Line` is 64 plain bytes with an alignment (64) that suits every `Elem`,
        // any bit pattern is a valid `Elem`, and `len` elements never exceed the lines'
        // bytes (see `reset`).
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast::<T>(), self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [T] {
        // SAFETY: as in `as_slice`, with unique access through `&mut self`.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast::<T>(), self.len) }
    }
}

impl<T: sealed::Elem> std::fmt::Debug for Aligned<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Aligned").field("len", &self.len).finish()
    }
}

/// Packed panel values in their stored precision.
#[derive(Clone, Debug)]
enum Panels {
    F32(Aligned<f32>),
    Bf16(Aligned<u16>),
}

impl Default for Panels {
    fn default() -> Self {
        Self::F32(Aligned::default())
    }
}

/// Some consecutive packed `B` values, as a kernel reads them.
#[derive(Clone, Copy, Debug)]
pub(crate) enum BPanel<'a> {
    F32(&'a [f32]),
    Bf16(&'a [u16]),
}

impl BPanel<'_> {
    /// Values held.
    pub(crate) fn len(&self) -> usize {
        match self {
            Self::F32(v) => v.len(),
            Self::Bf16(v) => v.len(),
        }
    }

    /// The first value's address as bytes, whether the values are bf16, and the bytes
    /// of one value: what the SIMD kernels step through.
    pub(crate) fn raw(&self) -> (*const u8, bool, usize) {
        match self {
            Self::F32(b) => (b.as_ptr().cast(), false, 4),
            Self::Bf16(b) => (b.as_ptr().cast(), true, 2),
        }
    }
}

/// One sub-tile of a register tile: rows `r0..r0 + rows`, columns `c0..c0 + cols`.
#[derive(Clone, Copy, Debug)]
#[cfg_attr(not(any(target_arch = "x86_64", target_arch = "aarch64")), allow(dead_code))]
pub(crate) struct SubTile {
    pub(crate) r0: usize,
    pub(crate) rows: usize,
    pub(crate) c0: usize,
    pub(crate) cols: usize,
}

/// The sub-tiles of a `rows × cols` tile for kernels whose registers hold at most
/// `sub_rows × sub_cols`: columns in blocks of `sub_cols`, rows in `ceil(rows /
/// sub_rows)` balanced groups (14 rows of at most 6 run as 5 + 5 + 4), so every group
/// keeps as many independent FMA chains in flight as it can.
#[cfg_attr(not(any(target_arch = "x86_64", target_arch = "aarch64")), allow(dead_code))]
pub(crate) fn sub_tiles(
    rows: usize,
    cols: usize,
    sub_rows: usize,
    sub_cols: usize,
) -> impl Iterator<Item = SubTile> {
    let groups = rows.div_ceil(sub_rows);
    (0..cols).step_by(sub_cols).flat_map(move |c0| {
        let mut r0 = 0;
        (0..groups).map(move |g| {
            let r = (rows - r0).div_ceil(groups - g);
            let tile = SubTile {
                r0,
                rows: r,
                c0,
                cols: (cols - c0).min(sub_cols),
            };
            r0 += r;
            tile
        })
    })
}

/// The `B` operand, packed: `ceil(n / NR)` panels of `k × NR` values, `k`-major, the
/// columns past `n` zero.
#[derive(Clone, Debug, Default)]
pub struct PackedB {
    n: usize,
    k: usize,
    panels: Panels,
}

impl PackedB {
    /// Pack a linear layer's weight `w` (`[n, k]` row-major: one row per output).
    pub fn from_weight(w: &[f32], n: usize, k: usize) -> Self {
        Self::from_weight_as(w, n, k, Precision::F32)
    }

    /// As [`PackedB::from_weight`], stored in `precision`.
    pub fn from_weight_as(w: &[f32], n: usize, k: usize, precision: Precision) -> Self {
        let mut p = Self::default();
        match precision {
            Precision::F32 => p.pack_nk(w, n, k, k),
            Precision::Bf16 => {
                let mut buf = Aligned::<u16>::default();
                p.set_shape(n, k, &mut buf);
                scatter_nk(buf.as_mut_slice(), w, n, k, k, to_bf16);
                p.panels = Panels::Bf16(buf);
            }
        }
        p
    }

    /// Record the shape `n × k` and size `buf` for its panels.
    fn set_shape<T: sealed::Elem>(&mut self, n: usize, k: usize, buf: &mut Aligned<T>) {
        let len = n
            .div_ceil(NR)
            .checked_mul(k)
            .and_then(|x| x.checked_mul(NR))
            .unwrap_or_else(|| panic!("a packed {n} × {k} weight overflows"));
        self.n = n;
        self.k = k;
        buf.reset(len);
    }

    /// The f32 panels, reused for a new packing of `n × k` values.
    fn f32_panels(&mut self, n: usize, k: usize) -> &mut [f32] {
        let mut buf = match std::mem::take(&mut self.panels) {
            Panels::F32(buf) => buf,
            Panels::Bf16(_) => Aligned::default(),
        };
        self.set_shape(n, k, &mut buf);
        self.panels = Panels::F32(buf);
        match &mut self.panels {
            Panels::F32(buf) => buf.as_mut_slice(),
            Panels::Bf16(_) => unreachable!("just set to f32"),
        }
    }

    /// Pack `B[j][p] = src[j * ld + p]` for `j < n` (output column), `p < k`, in f32.
    pub fn pack_nk(&mut self, src: &[f32], n: usize, k: usize, ld: usize) {
        scatter_nk(self.f32_panels(n, k), src, n, k, ld, |x| x);
    }

    /// Pack `B[j][p] = src[p * ld + j]` for `j < n`, `p < k` (the source is `k × n`),
    /// in f32.
    pub fn pack_kn(&mut self, src: &[f32], k: usize, n: usize, ld: usize) {
        assert!(ld >= n, "leading dimension {ld} < n {n}");
        assert!(holds(src.len(), k, ld, n), "B source too short");
        let d = self.f32_panels(n, k);
        for p in 0..k {
            let row = &src[p * ld..p * ld + n];
            for (panel, chunk) in row.chunks(NR).enumerate() {
                let at = panel * k * NR + p * NR;
                d[at..at + chunk.len()].copy_from_slice(chunk);
            }
        }
    }

    /// Output columns.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Reduction length.
    pub fn k(&self) -> usize {
        self.k
    }

    /// How the values are stored.
    pub fn precision(&self) -> Precision {
        match self.panels {
            Panels::F32(_) => Precision::F32,
            Panels::Bf16(_) => Precision::Bf16,
        }
    }

    /// Bytes the packed values take.
    pub fn bytes(&self) -> usize {
        match &self.panels {
            Panels::F32(b) => b.len() * 4,
            Panels::Bf16(b) => b.len() * 2,
        }
    }

    fn panels(&self) -> usize {
        self.n.div_ceil(NR)
    }

    /// Packed values `range` (in elements).
    fn slice(&self, range: std::ops::Range<usize>) -> BPanel<'_> {
        match &self.panels {
            Panels::F32(b) => BPanel::F32(&b.as_slice()[range]),
            Panels::Bf16(b) => BPanel::Bf16(&b.as_slice()[range]),
        }
    }
}

/// `d[panel(j)][p][j % NR] = conv(src[j * ld + p])`: the `[n, k]` → panel scatter.
fn scatter_nk<T: Copy>(d: &mut [T], src: &[f32], n: usize, k: usize, ld: usize, conv: impl Fn(f32) -> T) {
    assert!(ld >= k, "leading dimension {ld} < k {k}");
    assert!(holds(src.len(), n, ld, k), "B source too short");
    for j in 0..n {
        let base = (j / NR) * k * NR + j % NR;
        for (p, &x) in src[j * ld..j * ld + k].iter().enumerate() {
            d[base + p * NR] = conv(x);
        }
    }
}

/// Whether `len` values hold `rows` rows of `cols` values at stride `ld` (without
/// overflow: a wrapped product must never pass a bounds check).
fn holds(len: usize, rows: usize, ld: usize, cols: usize) -> bool {
    rows == 0
        || (rows - 1)
            .checked_mul(ld)
            .and_then(|x| x.checked_add(cols))
            .is_some_and(|need| len >= need)
}

/// Pack `m × k` rows of `a` (row stride `lda`) into `ceil(m / MR)` panels of `k × MR`
/// values, `k`-major; rows past `m` are zero.
pub fn pack_a(a: &[f32], m: usize, k: usize, lda: usize, out: &mut AlignedBuf) {
    assert!(lda >= k, "leading dimension {lda} < k {k}");
    assert!(holds(a.len(), m, lda, k), "A too short");
    pack_a_block(a, lda, 0, m, 0, k, out);
}

/// What happens to a tile of `A · Bᵀ + bias` before it is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Epilogue {
    /// `C = t`
    Store,
    /// `C = t · σ(1.702 t)` (CLIP's quick-GELU)
    QuickGelu,
    /// `C = C + t` (a residual connection)
    Accumulate,
}

/// What a kernel does with its tile: `C = [C +] (t [+ bias])`, then optionally
/// quick-GELU. A GEMM split along `k` passes `load_c` for every block after the first
/// and the bias and activation with the last.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tail {
    pub(crate) load_c: bool,
    pub(crate) gelu: bool,
}

/// Reduction block: one `KC × NR` slice of a weight panel (48 KiB) stays close (L1/L2)
/// while every row panel of the task's `A` block passes over it. 384 measured best on
/// Zen 4 for CLIP's widths (256: −8% on 768 → 3072, 512: −2%).
const KC: usize = 384;

/// A raw output pointer shared by threads that write disjoint tiles.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: every use writes a tile no other thread touches (see `matmul_packed`).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// The pointer `off` elements on. (A method, so closures capture the whole `Send`
    /// wrapper rather than its raw field.)
    ///
    /// # Safety
    /// As for `pointer::add`.
    unsafe fn at(self, off: usize) -> *mut f32 {
        unsafe { self.0.add(off) }
    }
}

/// `C[i][j] = epilogue(Σ_p A[i][p] · B[j][p] + bias[j])` for `i < m`, `j < b.n()`.
///
/// `a` is `m × b.k()` with row stride `lda`; `c` has row stride `ldc`. `scratch` is
/// packing space when the GEMM runs as one task (pass the same buffer again to reuse
/// its allocation). With `parallel`, tiles are shared out on the current rayon pool.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    isa: Isa,
    a: &[f32],
    m: usize,
    lda: usize,
    b: &PackedB,
    bias: Option<&[f32]>,
    epilogue: Epilogue,
    c: &mut [f32],
    ldc: usize,
    parallel: bool,
    scratch: &mut AlignedBuf,
) {
    let (n, k) = (b.n, b.k);
    if m == 0 || n == 0 {
        return;
    }
    assert!(ldc >= n, "output leading dimension {ldc} < n {n}");
    assert!(holds(c.len(), m, ldc, n), "output too short");
    if let Some(bias) = bias {
        assert!(bias.len() >= n, "bias shorter than n");
    }
    assert!(lda >= k, "leading dimension {lda} < k {k}");
    assert!(holds(a.len(), m, lda, k), "A too short");
    // SAFETY: bounds of `a`, `c` and `bias` checked above; `&mut c` is exclusive.
    unsafe {
        matmul_packed(
            isa.checked(),
            ASource::Rows { a, lda, scratch },
            m,
            b,
            bias,
            epilogue,
            OutPtr(c.as_mut_ptr()),
            ldc,
            parallel,
        )
    }
}

/// Where a GEMM's `A` comes from.
pub(crate) enum ASource<'a> {
    /// Already packed by `pack_a`.
    Packed(&'a [f32]),
    /// Row-major rows (stride `lda`); each task packs the `KC`-slices of its own rows
    /// just before use, so packing runs in parallel and the packed block is hot in L2.
    /// `scratch` serves the single-task case.
    Rows {
        a: &'a [f32],
        lda: usize,
        scratch: &'a mut AlignedBuf,
    },
}

/// Pack rows `row0..row0 + rows` (any count), columns `k0..k0 + kc` of `a` into
/// `ceil(rows / MR)` panels of `kc × MR` (zero-padded rows).
fn pack_a_block(a: &[f32], lda: usize, row0: usize, rows: usize, k0: usize, kc: usize, out: &mut AlignedBuf) {
    out.reset(rows.div_ceil(MR) * kc * MR);
    let d = out.as_mut_slice();
    for i in 0..rows {
        let base = (i / MR) * kc * MR + i % MR;
        let src = &a[(row0 + i) * lda + k0..(row0 + i) * lda + k0 + kc];
        for (p, &x) in src.iter().enumerate() {
            d[base + p * MR] = x;
        }
    }
}

/// # Safety
/// `c` must be valid for writes (and reads, for `Accumulate`) of rows `0..m`, columns
/// `0..b.n()` at row stride `ldc`, and no other thread may touch those elements during
/// the call. `isa` must be supported. `bias`, when given, holds at least `b.n()` values.
#[allow(clippy::too_many_arguments)]
unsafe fn matmul_packed(
    isa: Isa,
    a: ASource<'_>,
    m: usize,
    b: &PackedB,
    bias: Option<&[f32]>,
    epilogue: Epilogue,
    c: OutPtr,
    ldc: usize,
    parallel: bool,
) {
    let (n, k) = (b.n, b.k);
    if m == 0 || n == 0 {
        return;
    }
    let threads = if parallel {
        rayon::current_num_threads().max(1)
    } else {
        1
    };
    // Tasks own a block of row panels (whose `KC`-slices stay in L2 while every column
    // panel passes) and a range of column panels. Row blocks hold at most `MAX_BLOCK`
    // panels and come in a multiple of the thread count, so threads finish together;
    // with too few rows for that (a text query), the columns are split instead.
    const MAX_BLOCK: usize = 16;
    let row_panels = m.div_ceil(MR);
    let col_panels = b.panels();
    let want = row_panels.div_ceil(MAX_BLOCK).div_ceil(threads) * threads;
    let per_block = row_panels.div_ceil(want.min(row_panels));
    let row_blocks = row_panels.div_ceil(per_block);
    let chunks = if row_blocks >= threads {
        1
    } else {
        (4 * threads).div_ceil(row_blocks).min(col_panels)
    };
    let per_chunk = col_panels.div_ceil(chunks);
    let chunks = col_panels.div_ceil(per_chunk);
    let k_blocks = k.div_ceil(KC).max(1);
    let (packed, rows_src, scratch) = match a {
        ASource::Packed(p) => (Some(p), None, None),
        ASource::Rows { a, lda, scratch } => (None, Some((a, lda)), Some(scratch)),
    };
    // One register tile of rows ip*MR.. and columns jp*NR.., over the `kc`-slice.
    let tile = |ip: usize, jp: usize, ap: &[f32], bp: BPanel<'_>, kc: usize, kb: usize| {
        let last = kb + 1 == k_blocks;
        let tail = Tail {
            load_c: kb > 0 || epilogue == Epilogue::Accumulate,
            gelu: last && epilogue == Epilogue::QuickGelu,
        };
        let (rows, cols) = ((m - ip * MR).min(MR), (n - jp * NR).min(NR));
        let bias = bias.filter(|_| last).map(|b| &b[jp * NR..jp * NR + cols]);
        // SAFETY: the tile lies inside `c` by the caller's contract and belongs to the
        // calling task alone.
        unsafe {
            let out = c.at(ip * MR * ldc + jp * NR);
            by_isa!(isa, tile(rows, cols, kc, ap, bp, bias, tail, out, ldc))
        }
    };
    let k_slice = |kb: usize| (kb * KC, (k - (kb * KC).min(k)).min(KC));
    let task = |t: usize, block: &mut AlignedBuf| {
        let (rb, cc) = (t / chunks, t % chunks);
        let rows_range = rb * per_block..((rb + 1) * per_block).min(row_panels);
        let cols_range = cc * per_chunk..((cc + 1) * per_chunk).min(col_panels);
        if rows_range.len() == 1 {
            // A single row panel (a text query): nothing to reuse across row panels, so
            // stream each weight panel from start to end, which memory prefetches best.
            let ip = rows_range.start;
            let ap = match (packed, rows_src) {
                (Some(p), _) => &p[ip * k * MR..(ip + 1) * k * MR],
                (None, Some((a, lda))) => {
                    pack_a_block(a, lda, ip * MR, (m - ip * MR).min(MR), 0, k, block);
                    block.as_slice()
                }
                (None, None) => unreachable!("A is either packed or rows"),
            };
            for jp in cols_range {
                for kb in 0..k_blocks {
                    let (k0, kc) = k_slice(kb);
                    let bp = b.slice((jp * k + k0) * NR..(jp * k + k0 + kc) * NR);
                    tile(ip, jp, &ap[k0 * MR..(k0 + kc) * MR], bp, kc, kb);
                }
            }
            return;
        }
        for kb in 0..k_blocks {
            let (k0, kc) = k_slice(kb);
            if let Some((a, lda)) = rows_src {
                let row0 = rows_range.start * MR;
                let rows = (rows_range.end * MR).min(m) - row0;
                pack_a_block(a, lda, row0, rows, k0, kc, block);
            }
            for jp in cols_range.clone() {
                let bp = b.slice((jp * k + k0) * NR..(jp * k + k0 + kc) * NR);
                for ip in rows_range.clone() {
                    let ap = match packed {
                        Some(p) => &p[(ip * k + k0) * MR..(ip * k + k0 + kc) * MR],
                        None => {
                            let local = ip - rows_range.start;
                            &block.as_slice()[local * kc * MR..(local + 1) * kc * MR]
                        }
                    };
                    tile(ip, jp, ap, bp, kc, kb);
                }
            }
        }
    };
    let tasks = row_blocks * chunks;
    if threads > 1 && tasks > 1 {
        use rayon::prelude::*;
        (0..tasks)
            .into_par_iter()
            .for_each_init(AlignedBuf::default, |block, t| task(t, block));
    } else {
        let mut own = AlignedBuf::default();
        let block = scratch.unwrap_or(&mut own);
        (0..tasks).for_each(|t| task(t, block));
    }
}
