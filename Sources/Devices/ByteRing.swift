/// A fixed-capacity ring of bytes: the UART's receive FIFO (bounded, refuses
/// when full) and its output history (overwrites the oldest byte). Indices are
/// host-side values kept below `capacity`; nothing here depends on a guest value.
struct ByteRing {
    private var storage: [UInt8]
    private var head = 0 // index of the oldest byte
    private(set) var count = 0

    init(capacity: Int) {
        storage = [UInt8](repeating: 0, count: max(1, capacity))
    }

    var capacity: Int { storage.count }
    var isEmpty: Bool { count == 0 }

    /// Appends `byte` unless `count` has reached `limit` (at most `capacity`).
    mutating func append(_ byte: UInt8, limit: Int) -> Bool {
        guard count < min(limit, storage.count) else { return false }
        storage[(head + count) % storage.count] = byte
        count += 1
        return true
    }

    /// Appends `byte`, dropping the oldest byte when full.
    mutating func appendOverwriting(_ byte: UInt8) {
        if count == storage.count {
            storage[head] = byte
            head = (head + 1) % storage.count
        } else {
            storage[(head + count) % storage.count] = byte
            count += 1
        }
    }

    mutating func removeFirst() -> UInt8? {
        guard count > 0 else { return nil }
        let b = storage[head]
        head = (head + 1) % storage.count
        count -= 1
        return b
    }

    mutating func removeLast() {
        guard count > 0 else { return }
        count -= 1
    }

    mutating func removeAll() {
        head = 0
        count = 0
    }

    /// The bytes, oldest first.
    var elements: [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(count)
        for i in 0..<count { out.append(storage[(head + i) % storage.count]) }
        return out
    }
}
