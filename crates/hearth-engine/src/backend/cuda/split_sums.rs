//! dqmm's split-K partial sums on their way into the products' outputs: one product's ([`PendingSum`]: added
//! by dqmm_sum, or by the kernel that reads the output next) and a group's with the same input ([`GroupSums`]:
//! one dqmm_sum3 launch for all of them, or taken one by one by their readers).

use std::ffi::c_void;
use std::sync::Arc;

use super::memory::arg;
use super::{Gpu, Kernel, Module};

/// A split-K product's partial sums not yet added (see [`super::step::DevStep::pending_sum`]): `splits` slices of
/// `count4` float4s at `part`, one after another, to be summed into `y` by `sum` (the weight module's
/// dqmm_sum).
#[derive(Clone, Copy)]
pub struct PendingSum {
    pub sum: Kernel,
    pub part: u64,
    pub y: u64,
    pub count4: i32,
    pub splits: i32,
}

// SAFETY: the kernel is a plain driver function handle of a module the model keeps loaded, valid in any thread
// that has the context current (a step binds it first, see `DevStep::begin`), as `Module` itself is.
unsafe impl Send for PendingSum {}

impl PendingSum {
    /// The sums as a reading kernel takes them: (their address, slices, floats between slices).
    pub fn slices(&self) -> (u64, i32, i64) {
        (self.part, self.splits, 4 * self.count4 as i64)
    }

    /// Adds the slices into `y` (dqmm_sum, four floats a thread).
    pub fn run(&self, gpu: &Gpu) {
        let (part, y, count4, splits) = (self.part, self.y, self.count4, self.splits);
        gpu.run(
            self.sum,
            ((count4 as u32).div_ceil(256), 1, 1),
            (256, 1, 1),
            &mut [arg(&part), arg(&y), arg(&count4), arg(&splits)],
        );
    }
}

/// The split-K partial sums a group of dqmm products with the same input (a layer's q, k and v; gate and up)
/// leaves for one dqmm_sum3 launch: each product's sums take their own part of a slab (the step's weight
/// slab, which the dqmm path does not otherwise use), one launch a group instead of one a product.
pub(super) struct GroupSums {
    /// The slab's next free address and its end.
    pub(super) at: u64,
    pub(super) end: u64,
    /// Each split product's partial sums.
    pub(super) items: Vec<PendingSum>,
    /// A module holding dqmm_sum3 (the first split product's; the kernel does not depend on the type).
    pub(super) module: Option<Arc<Module>>,
}

impl GroupSums {
    /// An empty group over the slab [ptr, ptr + bytes).
    pub(super) fn new(ptr: u64, bytes: usize) -> GroupSums {
        GroupSums {
            at: ptr,
            end: ptr + bytes as u64,
            items: Vec::new(),
            module: None,
        }
    }

    /// Bytes of the slab that `splits` slices of `floats` partial sums take: the next product's start 256-byte
    /// aligned.
    pub(super) fn part_bytes(splits: usize, floats: usize) -> u64 {
        ((splits * floats * 4).div_ceil(256) * 256) as u64
    }

    /// Records a split product's partial sums, which lie at the slab's next free address, and moves past them.
    pub(super) fn push(&mut self, p: PendingSum, module: &Arc<Module>) {
        debug_assert_eq!(
            p.part, self.at,
            "a group's partial sums are laid out in order"
        );
        self.at += Self::part_bytes(p.splits as usize, p.count4 as usize * 4);
        self.items.push(p);
        self.module.get_or_insert_with(|| module.clone());
    }

    /// Product `y`'s partial sums, taken out of the group for a consumer that adds them itself: (their
    /// address, splits, floats between splits); (y, 1, 0) when that product was not split (it wrote y).
    pub(super) fn take(&mut self, y: u64) -> (u64, i32, i64) {
        match self.items.iter().position(|it| it.y == y) {
            Some(i) => self.items.remove(i).slices(),
            None => (y, 1, 0),
        }
    }

    /// For readers that add the sums themselves: each of products `ys`' partial sums as [`GroupSums::take`]
    /// gives them ((y, 1, 0) when `group` is None: nothing was split), the group's other products' added now.
    pub(super) fn take_each<const N: usize>(
        group: Option<GroupSums>,
        gpu: &Gpu,
        ys: [u64; N],
    ) -> [(u64, i32, i64); N] {
        match group {
            Some(mut g) => {
                let taken = ys.map(|y| g.take(y));
                g.flush(gpu);
                taken
            }
            None => ys.map(|y| (y, 1, 0)),
        }
    }

    /// Adds the recorded products' partial sums into their outputs: dqmm_sum3, three products a launch.
    pub(super) fn flush(self, gpu: &Gpu) {
        let Some(module) = self.module else {
            return;
        };
        for chunk in self.items.chunks(3) {
            // Three (partial sums, y, float4s, splits) slots, the missing ones empty.
            let items: [(u64, u64, i32, i32); 3] = std::array::from_fn(|j| {
                chunk
                    .get(j)
                    .map_or((0, 0, 0, 1), |p| (p.part, p.y, p.count4, p.splits))
            });
            let blocks = items.map(|it| (it.2 as u32).div_ceil(256));
            let (b1, b2) = (blocks[0] as i32, (blocks[0] + blocks[1]) as i32);
            let mut args: Vec<*mut c_void> = items
                .iter()
                .flat_map(|it| [arg(&it.0), arg(&it.1), arg(&it.2), arg(&it.3)])
                .collect();
            args.extend([arg(&b1), arg(&b2)]);
            gpu.run(
                module.f("dqmm_sum3"),
                (blocks.iter().sum(), 1, 1),
                (256, 1, 1),
                &mut args,
            );
        }
    }
}
