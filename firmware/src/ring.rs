//! A fixed-capacity FIFO ring (no allocation), used for offline buffering.

use core::mem::MaybeUninit;

/// A first-in first-out queue of at most `N` values, stored inline.
pub struct Ring<T, const N: usize> {
    slots: [MaybeUninit<T>; N],
    head: usize,
    len: usize,
}

impl<T, const N: usize> Ring<T, N> {
    /// An empty ring.
    pub const fn new() -> Self {
        Self {
            slots: [const { MaybeUninit::uninit() }; N],
            head: 0,
            len: 0,
        }
    }

    /// Capacity `N`.
    pub const fn capacity(&self) -> usize {
        N
    }

    /// Number of stored values.
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Whether the ring holds nothing.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the ring holds `N` values.
    pub const fn is_full(&self) -> bool {
        self.len == N
    }

    fn physical(&self, index: usize) -> usize {
        (self.head + index) % N
    }

    /// Append at the back; gives the value back when the ring is full.
    pub fn push_back(&mut self, value: T) -> Result<(), T> {
        if self.is_full() {
            return Err(value);
        }
        let at = self.physical(self.len);
        self.slots[at].write(value);
        self.len += 1;
        Ok(())
    }

    /// Remove and return the front (oldest) value.
    pub fn pop_front(&mut self) -> Option<T> {
        if self.is_empty() {
            return None;
        }
        let at = self.head;
        self.head = (self.head + 1) % N;
        self.len -= 1;
        // SAFETY: slot `at` was inside [head, head+len), so it holds an initialised value; it
        // is now outside that range and will not be read again before being rewritten.
        Some(unsafe { self.slots[at].assume_init_read() })
    }

    /// The value `index` places behind the front.
    pub fn get(&self, index: usize) -> Option<&T> {
        if index >= self.len {
            return None;
        }
        let at = self.physical(index);
        // SAFETY: index < len, so the slot lies inside [head, head+len) and is initialised.
        Some(unsafe { self.slots[at].assume_init_ref() })
    }

    /// Mutable access to the value `index` places behind the front.
    pub fn get_mut(&mut self, index: usize) -> Option<&mut T> {
        if index >= self.len {
            return None;
        }
        let at = self.physical(index);
        // SAFETY: index < len, so the slot lies inside [head, head+len) and is initialised.
        Some(unsafe { self.slots[at].assume_init_mut() })
    }

    /// Remove the value at `index`, keeping the order of the others. O(len).
    pub fn remove(&mut self, index: usize) -> Option<T> {
        if index >= self.len {
            return None;
        }
        let at = self.physical(index);
        // SAFETY: index < len, so the slot is initialised; it is overwritten by the shift
        // below (or falls outside the live range) and never read again as this value.
        let value = unsafe { self.slots[at].assume_init_read() };
        for i in index..self.len - 1 {
            let from = self.physical(i + 1);
            let to = self.physical(i);
            // SAFETY: `from` is inside the live range and initialised; moving it bitwise into
            // `to` (whose value was already moved out) transfers ownership without a copy.
            let moved = unsafe { self.slots[from].assume_init_read() };
            self.slots[to].write(moved);
        }
        self.len -= 1;
        Some(value)
    }

    /// Iterate from front to back.
    pub fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        (0..self.len).filter_map(move |i| self.get(i))
    }

    /// Drop every value.
    pub fn clear(&mut self) {
        while self.pop_front().is_some() {}
    }
}

impl<T, const N: usize> Default for Ring<T, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T, const N: usize> Drop for Ring<T, N> {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::Ring;

    #[test]
    fn fifo_order_across_wraparound() {
        let mut r: Ring<u32, 4> = Ring::new();
        for round in 0..10u32 {
            for i in 0..3 {
                r.push_back(round * 10 + i).unwrap();
            }
            for i in 0..3 {
                assert_eq!(r.pop_front(), Some(round * 10 + i));
            }
        }
        assert!(r.is_empty());
        assert_eq!(r.pop_front(), None);
    }

    #[test]
    fn full_ring_returns_the_value() {
        let mut r: Ring<u8, 2> = Ring::new();
        r.push_back(1).unwrap();
        r.push_back(2).unwrap();
        assert!(r.is_full());
        assert_eq!(r.push_back(3), Err(3));
        assert_eq!(r.iter().copied().collect::<Vec<_>>(), vec![1, 2]);
    }

    #[test]
    fn remove_keeps_order_with_wrapped_storage() {
        let mut r: Ring<u32, 5> = Ring::new();
        for i in 0..5 {
            r.push_back(i).unwrap();
        }
        r.pop_front();
        r.pop_front();
        r.push_back(5).unwrap();
        r.push_back(6).unwrap(); // storage now wraps
        assert_eq!(r.remove(2), Some(4));
        assert_eq!(r.iter().copied().collect::<Vec<_>>(), vec![2, 3, 5, 6]);
        assert_eq!(r.remove(10), None);
        r.push_back(7).unwrap();
        assert_eq!(r.iter().copied().collect::<Vec<_>>(), vec![2, 3, 5, 6, 7]);
    }

    #[test]
    fn get_mut_and_out_of_range() {
        let mut r: Ring<u32, 3> = Ring::new();
        r.push_back(1).unwrap();
        *r.get_mut(0).unwrap() = 9;
        assert_eq!(r.get(0), Some(&9));
        assert_eq!(r.get(1), None);
        assert!(r.get_mut(1).is_none());
    }

    #[test]
    fn drops_owned_values_exactly_once() {
        use std::rc::Rc;
        let token = Rc::new(());
        {
            let mut r: Ring<Rc<()>, 3> = Ring::new();
            for _ in 0..3 {
                r.push_back(token.clone()).unwrap();
            }
            drop(r.remove(1));
            assert_eq!(Rc::strong_count(&token), 3);
        }
        assert_eq!(Rc::strong_count(&token), 1);
    }
}
