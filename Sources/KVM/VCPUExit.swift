import CShim

/// Why KVM_RUN returned, decoded from struct kvm_run in one place.
///
/// I/O and MMIO exits carry their data the way rust-vmm's kvm-ioctls does
/// (`IoIn(port, &mut [u8])`, `MmioRead(addr, &mut [u8])`): an `ExitData`
/// window into the run page that the handler reads (writes) or fills
/// (reads), valid until the vCPU runs again. Nothing outside this module
/// sees the run page's layout.
public enum VCPUExit: Equatable {
    /// Port input (`in`, `rep ins`): store `data.count / size` elements of
    /// `size` bytes each into `data`.
    case ioIn(port: UInt16, size: Int, data: ExitData)
    /// Port output (`out`, `rep outs`): `data` holds `data.count / size`
    /// elements of `size` bytes each.
    case ioOut(port: UInt16, size: Int, data: ExitData)
    /// A read of guest-physical memory no slot backs: store the value into `data`.
    case mmioRead(address: UInt64, data: ExitData)
    /// A write to guest-physical memory no slot backs: `data` holds the bytes.
    case mmioWrite(address: UInt64, data: ExitData)
    case hlt
    /// Triple fault (or an INIT the VMM must handle).
    case shutdown
    case failEntry(reason: UInt64, cpu: UInt32)
    case internalError(suberror: UInt32, data: [UInt64])
    case systemEvent(SystemEvent)
    case exception(number: UInt32, errorCode: UInt32)
    case irqWindowOpen
    /// KVM_RUN returned EINTR (the vCPU was kicked) or KVM_EXIT_INTR.
    case interrupted
    case unknown(reason: UInt32)

    /// The `suberror` of an internal-error exit when KVM's instruction
    /// emulator failed (KVM_INTERNAL_ERROR_EMULATION, linux/kvm.h).
    public static let internalErrorEmulation: UInt32 = SHIM_KVM_INTERNAL_ERROR_EMULATION

    /// Decodes a kvm_run page. Values are bounded so a bad page cannot make
    /// the VMM reach outside it: an out-of-bounds PIO data range or a bad port
    /// width is `.unknown`, an MMIO length is clamped to the 8 data bytes.
    /// The data windows of the result point into `run`.
    static func decode(_ run: UnsafeMutableRawBufferPointer) -> VCPUExit {
        guard run.count >= SHIM_RUN_SIZE else { return .unknown(reason: UInt32.max) }
        func u8(_ o: Int) -> UInt8 { run.loadUnaligned(fromByteOffset: o, as: UInt8.self) }
        func u16(_ o: Int) -> UInt16 { run.loadUnaligned(fromByteOffset: o, as: UInt16.self) }
        func u32(_ o: Int) -> UInt32 { run.loadUnaligned(fromByteOffset: o, as: UInt32.self) }
        func u64(_ o: Int) -> UInt64 { run.loadUnaligned(fromByteOffset: o, as: UInt64.self) }

        let reason = u32(SHIM_RUN_EXIT_REASON)
        switch reason {
        case SHIM_KVM_EXIT_IO:
            let size = Int(u8(SHIM_RUN_IO_SIZE))
            let count = Int(u32(SHIM_RUN_IO_COUNT))
            let off = u64(SHIM_RUN_IO_DATA_OFFSET)
            let (bytes, o1) = size.multipliedReportingOverflow(by: count)
            guard [1, 2, 4].contains(size), !o1, off <= UInt64(run.count), bytes <= run.count - Int(off) else {
                return .unknown(reason: reason)
            }
            let data = ExitData(UnsafeMutableRawBufferPointer(rebasing: run[Int(off)..<(Int(off) + bytes)]))
            let port = u16(SHIM_RUN_IO_PORT)
            return u8(SHIM_RUN_IO_DIRECTION) == SHIM_KVM_EXIT_IO_OUT
                ? .ioOut(port: port, size: size, data: data)
                : .ioIn(port: port, size: size, data: data)
        case SHIM_KVM_EXIT_MMIO:
            let len = Int(min(u32(SHIM_RUN_MMIO_LEN), 8)) // __u8 data[8]
            let data = ExitData(UnsafeMutableRawBufferPointer(rebasing: run[SHIM_RUN_MMIO_DATA..<(SHIM_RUN_MMIO_DATA + len)]))
            let address = u64(SHIM_RUN_MMIO_PHYS_ADDR)
            return u8(SHIM_RUN_MMIO_IS_WRITE) != 0
                ? .mmioWrite(address: address, data: data)
                : .mmioRead(address: address, data: data)
        case SHIM_KVM_EXIT_HLT: return .hlt
        case SHIM_KVM_EXIT_SHUTDOWN: return .shutdown
        case SHIM_KVM_EXIT_FAIL_ENTRY:
            return .failEntry(reason: u64(SHIM_RUN_FAIL_ENTRY_REASON), cpu: u32(SHIM_RUN_FAIL_ENTRY_CPU))
        case SHIM_KVM_EXIT_INTERNAL_ERROR:
            let n = Int(min(u32(SHIM_RUN_INTERNAL_NDATA), 16)) // KVM_INTERNAL_ERR_DATA has 16 u64s
            return .internalError(suberror: u32(SHIM_RUN_INTERNAL_SUBERROR),
                                  data: (0..<n).map { u64(SHIM_RUN_INTERNAL_DATA + 8 * $0) })
        case SHIM_KVM_EXIT_SYSTEM_EVENT: return .systemEvent(SystemEvent(type: u32(SHIM_RUN_SYSTEM_EVENT_TYPE)))
        case SHIM_KVM_EXIT_EXCEPTION:
            return .exception(number: u32(SHIM_RUN_EX_EXCEPTION), errorCode: u32(SHIM_RUN_EX_ERROR_CODE))
        case SHIM_KVM_EXIT_IRQ_WINDOW_OPEN: return .irqWindowOpen
        case SHIM_KVM_EXIT_INTR: return .interrupted
        default: return .unknown(reason: reason)
        }
    }
}

/// The type of a KVM_EXIT_SYSTEM_EVENT (linux/kvm.h KVM_SYSTEM_EVENT_*).
public enum SystemEvent: Equatable, Sendable {
    /// The guest asked to power off (e.g. PSCI SYSTEM_OFF).
    case shutdown
    /// The guest asked to reboot.
    case reset
    /// The guest reported a crash.
    case crash
    /// A type SwiftVMM does not know, with KVM's number.
    case other(UInt32)

    init(type: UInt32) {
        switch type {
        case SHIM_KVM_SYSTEM_EVENT_SHUTDOWN: self = .shutdown
        case SHIM_KVM_SYSTEM_EVENT_RESET: self = .reset
        case SHIM_KVM_SYSTEM_EVENT_CRASH: self = .crash
        default: self = .other(type)
        }
    }

    /// KVM's number for the event.
    var type: UInt32 {
        switch self {
        case .shutdown: return SHIM_KVM_SYSTEM_EVENT_SHUTDOWN
        case .reset: return SHIM_KVM_SYSTEM_EVENT_RESET
        case .crash: return SHIM_KVM_SYSTEM_EVENT_CRASH
        case let .other(t): return t
        }
    }
}
