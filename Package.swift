// swift-tools-version:6.0
// SwiftVMM: a small virtual machine monitor for Linux x86_64 on KVM.
// Layers, one direction of dependencies (README.md, "Layout", says what each holds):
//   CShim -> HostSys -> GuestMemory | KVM -> Devices -> PCI -> Virtio; VFIO; VFIOUser; Boot; ACPI -> VMM -> swiftvmm
// with Bits (pure-Swift helpers, no dependencies) below all of them. Only HostSys calls
// libc; devices see protocols (interrupt lines, guest memory, DMA mappings), never ioctls,
// and the VMM glue sees the VM as protocols (interrupt routing, memory slots).
import PackageDescription

let package = Package(
    name: "SwiftVMM",
    products: [
        .executable(name: "swiftvmm", targets: ["swiftvmm"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/LebJe/TOMLKit", from: "0.6.0"),
    ],
    targets: [
        // Pure-Swift helpers every layer shares: hex text, little-endian bytes, alignment,
        // range overlap, checksums, fixed-width ASCII fields, MAC addresses. No dependencies.
        .target(name: "Bits"),
        // uAPI headers, ioctl numbers, offsetof values and layout asserts; liburing (Debian's
        // liburing-dev: io_uring for asynchronous disk I/O) and libseccomp (libseccomp-dev: the
        // sandbox's filters), both used by HostSys only.
        .target(name: "CShim", linkerSettings: [.linkedLibrary("uring"), .linkedLibrary("seccomp")]),
        // The only layer that calls libc: fds, ioctl, mmap, memfd, eventfd, threads, signals, tty,
        // io_uring.
        .target(name: "HostSys", dependencies: ["CShim"]),
        // Guest physical memory: addresses, regions, checked reads and writes; the DMA mapping
        // protocol (IOVA -> GPA), its translator for emulated devices and the identity mapping.
        .target(name: "GuestMemory", dependencies: ["HostSys"]),
        // KVM: System -> VirtualMachine -> VCPU, exit decoding; the VM as protocols
        // (VMInterruptRouting, VMMemorySlots) for the glue above.
        .target(name: "KVM", dependencies: ["CShim", "HostSys", "GuestMemory"]),
        // Buses and devices. Devices see protocols (interrupt lines, consoles), never ioctls.
        .target(name: "Devices", dependencies: ["GuestMemory"], exclude: ["README.md"]),
        // PCI: config space, BARs, capabilities, MSI/MSI-X, host bridge, config access (0xCF8/ECAM).
        .target(name: "PCI", dependencies: ["Bits", "Devices", "GuestMemory"], exclude: ["README.md"]),
        // virtio 1.2 over PCI (modern): split virtqueues, feature negotiation, devices.
        .target(name: "Virtio", dependencies: ["Bits", "PCI", "Devices", "GuestMemory"], exclude: ["README.md"]),
        // iommufd + VFIO device cdevs: IOAS, device binding, regions, IRQs, sysfs discovery, coherency.
        .target(name: "VFIO", dependencies: ["Bits", "CShim", "HostSys", "GuestMemory"], exclude: ["README.md"]),
        // vfio-user client: PCI devices served by another process over a UNIX socket (messages,
        // capabilities, DMA windows served by message or reached through passed fds).
        .target(name: "VFIOUser", dependencies: ["Bits", "HostSys"], exclude: ["README.md"]),
        // Kernel loading: bzImage, ELF/PVH, boot_params, e820, MP table, initial CPU state.
        .target(name: "Boot", dependencies: ["Bits", "GuestMemory"], exclude: ["README.md"]),
        // ACPI tables (RSDP, XSDT, FADT, MADT, DSDT) and an AML encoder, as bytes.
        .target(name: "ACPI", dependencies: ["Bits", "GuestMemory"], exclude: ["README.md"]),
        // Config model: TOML parsing, validation with key paths, no kernel access (file checks through HostSys).
        .target(name: "VMConfig", dependencies: [
            "Bits", "HostSys",
            .product(name: "TOMLKit", package: "TOMLKit"),
        ]),
        // Machine builder, run loop, lifecycle.
        .target(name: "VMM", dependencies: [
            "Bits", "HostSys", "GuestMemory", "KVM", "Devices", "PCI", "Virtio", "Boot", "ACPI", "VMConfig", "VFIO", "VFIOUser",
            .product(name: "Logging", package: "swift-log"),
        ]),
        .executableTarget(name: "swiftvmm", dependencies: [
            "Bits", "HostSys", "VMM", "VFIO", "VMConfig",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ]),

        // Fuzz targets (Fuzz/): every entry point the guest and the host's files drive, for
        // libFuzzer (scripts/fuzz builds swiftvmm-fuzz with -sanitize=fuzzer,address) and for
        // the unit tests, which replay the corpora. Outside the layers: it uses them all.
        .target(name: "FuzzTargets", dependencies: ["Bits", "GuestMemory", "Devices", "PCI", "Virtio", "Boot", "VMConfig", "VMM", "VFIOUser"],
                path: "Fuzz/Targets"),
        // Linked by the toolchain's lld: gold fails on the libFuzzer build (an internal error
        // in its DWARF reader while reporting a symbol).
        .executableTarget(name: "swiftvmm-fuzz", dependencies: ["FuzzTargets"], path: "Fuzz/Main",
                          linkerSettings: [.unsafeFlags(["-use-ld=lld"])]),

        // Fakes the test targets share (recording interrupt line and console, a seeded
        // generator, the VFIO ioctl performer and device, a virtqueue driver). A regular target because test targets cannot depend on each other.
        .target(name: "TestFakes", dependencies: ["CShim", "HostSys", "Devices", "GuestMemory", "VFIO", "Virtio"], path: "Tests/TestFakes"),

        .testTarget(name: "BitsTests", dependencies: ["Bits"]),
        .testTarget(name: "GuestMemoryTests", dependencies: ["TestFakes", "GuestMemory"]),
        .testTarget(name: "KVMTests", dependencies: ["KVM", "CShim"]),
        .testTarget(name: "DevicesTests", dependencies: ["TestFakes", "Devices", "GuestMemory"]),
        .testTarget(name: "BootTests", dependencies: ["TestFakes", "Boot", "GuestMemory"]),
        .testTarget(name: "PCITests", dependencies: ["TestFakes", "Bits", "PCI", "Devices", "GuestMemory"]),
        .testTarget(name: "VirtioTests", dependencies: ["TestFakes", "Virtio", "PCI", "Devices", "GuestMemory", "HostSys", "CShim"]),
        .testTarget(name: "VFIOTests", dependencies: ["TestFakes", "VFIO", "GuestMemory"]),
        .testTarget(name: "VFIOUserTests", dependencies: ["VFIOUser", "HostSys", "GuestMemory", "Virtio"]),
        .testTarget(name: "ACPITests", dependencies: ["ACPI", "GuestMemory"]),
        .testTarget(name: "VMConfigTests", dependencies: ["VMConfig"]),
        .testTarget(name: "VMMTests", dependencies: [
            "TestFakes", "VMM", "CShim", "HostSys", "GuestMemory", "KVM", "PCI", "Virtio", "VFIO", "VMConfig",
            .product(name: "Logging", package: "swift-log"),
        ]),
        .testTarget(name: "swiftvmmTests", dependencies: ["swiftvmm"]),
        .testTarget(name: "FuzzTargetsTests", dependencies: ["FuzzTargets", "TestFakes"]),
        // Reads Sources/ and checks the layer rules the compiler cannot see (imports, libc, KVM's uAPI).
        .testTarget(name: "LayeringTests"),
    ]
)

// Every layer sees an extension's members only through a module it imports itself
// (SE-0444), so a Foundation API cannot slip in through a dependency's import (the
// full Foundation links ICU into the binary; LayeringTests forbids importing it).
for target in package.targets where target.type == .regular || target.type == .executable {
    guard !["CShim", "FuzzTargets", "swiftvmm-fuzz", "TestFakes"].contains(target.name) else { continue }
    target.swiftSettings = (target.swiftSettings ?? []) + [.enableUpcomingFeature("MemberImportVisibility")]
}
