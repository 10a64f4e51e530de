import CShim
import XCTest

/// Every request number against its literal value (linux/kvm.h, x86_64),
/// computed by hand from _IO/_IOR/_IOW/_IOWR(0xAE, nr, size).
final class IoctlNumberTests: XCTestCase {
    func testSystemIoctls() {
        XCTAssertEqual(SHIM_KVM_GET_API_VERSION, 0xAE00)
        XCTAssertEqual(SHIM_KVM_CREATE_VM, 0xAE01)
        XCTAssertEqual(SHIM_KVM_GET_MSR_INDEX_LIST, 0xC004_AE02)
        XCTAssertEqual(SHIM_KVM_CHECK_EXTENSION, 0xAE03)
        XCTAssertEqual(SHIM_KVM_GET_VCPU_MMAP_SIZE, 0xAE04)
        XCTAssertEqual(SHIM_KVM_GET_SUPPORTED_CPUID, 0xC008_AE05)
    }

    func testVMIoctls() {
        XCTAssertEqual(SHIM_KVM_CREATE_VCPU, 0xAE41)
        XCTAssertEqual(SHIM_KVM_SET_USER_MEMORY_REGION, 0x4020_AE46)
        XCTAssertEqual(SHIM_KVM_SET_TSS_ADDR, 0xAE47)
        XCTAssertEqual(SHIM_KVM_SET_IDENTITY_MAP_ADDR, 0x4008_AE48)
        XCTAssertEqual(SHIM_KVM_CREATE_IRQCHIP, 0xAE60)
        XCTAssertEqual(SHIM_KVM_IRQ_LINE, 0x4008_AE61)
        XCTAssertEqual(SHIM_KVM_SET_GSI_ROUTING, 0x4008_AE6A)
        XCTAssertEqual(SHIM_KVM_IRQFD, 0x4020_AE76)
        XCTAssertEqual(SHIM_KVM_CREATE_PIT2, 0x4040_AE77)
        XCTAssertEqual(SHIM_KVM_IOEVENTFD, 0x4040_AE79)
        XCTAssertEqual(SHIM_KVM_ENABLE_CAP, 0x4068_AEA3)
        XCTAssertEqual(SHIM_KVM_CREATE_DEVICE, 0xC00C_AEE0)
        XCTAssertEqual(SHIM_KVM_SET_DEVICE_ATTR, 0x4018_AEE1)
    }

    func testKVMVFIODeviceValues() {
        // _IOWR(0xAE, 0xE0, struct kvm_create_device = 12 bytes): dir 3 << 30 | 12 << 16.
        XCTAssertEqual(SHIM_KVM_CREATE_DEVICE, 0xC00C_AEE0)
        // _IOW(0xAE, 0xE1, struct kvm_device_attr = 24 bytes).
        XCTAssertEqual(SHIM_KVM_SET_DEVICE_ATTR, 0x4018_AEE1)
        // enum kvm_device_type: FSL_MPIC_20 = 1, FSL_MPIC_42, XICS, VFIO = 4.
        XCTAssertEqual(SHIM_KVM_DEV_TYPE_VFIO, 4)
        XCTAssertEqual(SHIM_KVM_DEV_VFIO_FILE, 1)
        XCTAssertEqual(SHIM_KVM_DEV_VFIO_FILE_ADD, 1)
        XCTAssertEqual(SHIM_KVM_DEV_VFIO_FILE_DEL, 2)
    }

    func testVCPUIoctls() {
        XCTAssertEqual(SHIM_KVM_RUN, 0xAE80)
        XCTAssertEqual(SHIM_KVM_GET_REGS, 0x8090_AE81)
        XCTAssertEqual(SHIM_KVM_SET_REGS, 0x4090_AE82)
        XCTAssertEqual(SHIM_KVM_GET_SREGS, 0x8138_AE83)
        XCTAssertEqual(SHIM_KVM_SET_SREGS, 0x4138_AE84)
        XCTAssertEqual(SHIM_KVM_SET_MSRS, 0x4008_AE89)
        XCTAssertEqual(SHIM_KVM_SET_FPU, 0x41A0_AE8D)
        XCTAssertEqual(SHIM_KVM_GET_LAPIC, 0x8400_AE8E)
        XCTAssertEqual(SHIM_KVM_SET_LAPIC, 0x4400_AE8F)
        XCTAssertEqual(SHIM_KVM_SET_CPUID2, 0x4008_AE90)
        XCTAssertEqual(SHIM_KVM_SET_MP_STATE, 0x4004_AE99)
        XCTAssertEqual(SHIM_KVM_GET_MP_STATE, 0x8004_AE98)
    }

    func testRunLayout() {
        XCTAssertEqual(SHIM_RUN_EXIT_REASON, 8)
        XCTAssertEqual(SHIM_RUN_IMMEDIATE_EXIT, 1)
        XCTAssertEqual(SHIM_RUN_IO_DIRECTION, 32)
        XCTAssertEqual(SHIM_RUN_IO_SIZE, 33)
        XCTAssertEqual(SHIM_RUN_IO_PORT, 34)
        XCTAssertEqual(SHIM_RUN_IO_COUNT, 36)
        XCTAssertEqual(SHIM_RUN_IO_DATA_OFFSET, 40)
        XCTAssertEqual(SHIM_RUN_MMIO_PHYS_ADDR, 32)
        XCTAssertEqual(SHIM_RUN_MMIO_DATA, 40)
        XCTAssertEqual(SHIM_RUN_MMIO_LEN, 48)
        XCTAssertEqual(SHIM_RUN_MMIO_IS_WRITE, 52)
        XCTAssertEqual(SHIM_KVM_EXIT_IO, 2)
        XCTAssertEqual(SHIM_KVM_EXIT_MMIO, 6)
        XCTAssertEqual(SHIM_KVM_EXIT_SHUTDOWN, 8)
        XCTAssertEqual(SHIM_KVM_EXIT_INTERNAL_ERROR, 17)
        XCTAssertEqual(SHIM_KVM_EXIT_SYSTEM_EVENT, 24)
    }
}
