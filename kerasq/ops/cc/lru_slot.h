// The slot policy of the packed-weight caches (int8 depthwise, GEMM): an entry is keyed by
// the weight buffer's address; a new packing replaces the entry of the same buffer (its
// contents changed), else takes a free slot, else evicts the least recently used entry.
#ifndef KERASQ_OPS_CC_LRU_SLOT_H_
#define KERASQ_OPS_CC_LRU_SLOT_H_

#include <cstddef>
#include <vector>

namespace kerasq {

// The slot for `key` in `entries` (Entry has `const void* key` and `uint64_t last_use`),
// appended while there are fewer than `capacity`. The caller holds the cache's lock and
// fills the slot.
template <typename Entry>
Entry* PickLruSlot(std::vector<Entry>* entries, const void* key, size_t capacity) {
  for (Entry& e : *entries)
    if (e.key == key) return &e;
  if (entries->size() < capacity) {
    entries->emplace_back();
    return &entries->back();
  }
  Entry* slot = &entries->front();
  for (Entry& e : *entries)
    if (e.last_use < slot->last_use) slot = &e;
  return slot;
}

}  // namespace kerasq

#endif  // KERASQ_OPS_CC_LRU_SLOT_H_
