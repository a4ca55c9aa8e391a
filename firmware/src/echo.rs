//! The echo guest: a stand-in for a real operating system in tests of the
//! control plane. It boots in milliseconds, says so on COM1, then sleeps in
//! `hlt` with interrupts on, so it costs no CPU while idle, and wakes up for
//! two interrupts only:
//!
//! * COM1 received data (GSI 4): every byte waiting in the UART is echoed back,
//!   a carriage return as "\r\n" (so a terminal shows lines) and DEL or
//!   backspace as "\b \b" (so a terminal erases);
//! * the ACPI Generic Event Device (GSI 5), raised by the VMM's `powerdown`
//!   control command: when its event register says "power button", the guest
//!   says so and powers off through the ACPI sleep control register (S5);
//!   when it says "PCI hotplug", the guest ejects every slot whose removal
//!   the VMM requested, as Linux's acpiphp does through the slot's `_EJ0`
//!   (it reads the hotplug block's "came up" bitmap, which clears it, then
//!   writes the "removal requested" bitmap into the eject register), so a
//!   hot-added disk or NIC of a running echo server can be detached.
//!
//! Interrupts are enabled only in the idle loop, so a handler never returns
//! with `iret` (which the host's instruction emulator cannot execute in
//! protected mode): it goes back to the idle loop with a fresh stack.
//!
//! It stays in 32-bit protected mode without paging (the PVH entry state), so
//! no page tables are needed and the LAPIC and IOAPIC are reached at their
//! physical addresses. Every guest instruction may cost about 1 µs where KVM is
//! nested (the host emulates them), so the code is a few hundred instructions
//! of assembly; there is no Rust code to run and no SSE.
//!
//! Interrupt routing: the legacy PIC is remapped to vectors 0x20-0x2f and fully
//! masked, the LAPIC's LINT0 (ExtINT from the PIC) is masked, and the IOAPIC
//! sends GSI 4 and GSI 5 (both edge-triggered, active high, as the DSDT's
//! `_CRS` of COM1 and GED declare and as the VMM's irqfds pulse them) to the
//! boot CPU's LAPIC as vectors 0x30 and 0x31.

#![no_std]
#![no_main]

core::arch::global_asm!(
    r#"
    .set COM1, 0x3f8
    .set COM1_IER, 0x3f9
    .set COM1_MCR, 0x3fc
    .set COM1_LSR, 0x3fd
    .set BOOT_TIMER_PORT, 0x80
    .set SLEEP_CONTROL_PORT, 0x3c0
    .set GED_PORT, 0x3c4
    .set GED_POWER_BUTTON, 1
    .set GED_PCI_HOTPLUG, 2
    /* The ACPI PCI hotplug registers (src/vmm/devices/hotplug.rs). */
    .set HOTPLUG_PCIU, 0xae00
    .set HOTPLUG_PCID, 0xae04
    .set HOTPLUG_B0EJ, 0xae08
    /* SLP_TYP = 5 (the DSDT's \_S5) in bits 2-4, SLP_EN in bit 5 */
    .set SLEEP_S5, (5 << 2) | (1 << 5)

    .set LAPIC, 0xfee00000
    .set LAPIC_ID, LAPIC + 0x20
    .set LAPIC_TPR, LAPIC + 0x80
    .set LAPIC_EOI, LAPIC + 0xb0
    .set LAPIC_SVR, LAPIC + 0xf0
    .set LAPIC_LVT_LINT0, LAPIC + 0x350
    .set IOAPIC_REGSEL, 0xfec00000
    .set IOAPIC_WINDOW, 0xfec00010

    .set COM1_GSI, 4
    .set GED_GSI, 5
    .set VECTOR_COM1, 0x30
    .set VECTOR_GED, 0x31
    .set VECTOR_SPURIOUS, 0x3f
    .set IDT_ENTRIES, 0x40

    .set CODE_SELECTOR, 0x08
    .set DATA_SELECTOR, 0x10

    .section .note.pvh, "a", @note
    .balign 4
    .long 4
    .long 4
    .long 18
    .asciz "Xen"
    .balign 4
    .long pvh_start
    .balign 4

    .section .text.boot, "ax"
    .code32
    .global pvh_start
pvh_start:
    cli
    cld
    /* Our own flat GDT, so nothing depends on the one the VMM left. */
    lgdt gdt_ptr
    ljmp $CODE_SELECTOR, $1f
1:
    movw $DATA_SELECTOR, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %fs
    movw %ax, %gs
    movw %ax, %ss
    movl $stack_top, %esp

    movl $ready_msg, %esi
    call puts
    movb $0x41, %al
    outb %al, $BOOT_TIMER_PORT

    /* The 8259 PICs: vectors 0x20-0x2f (away from the exceptions), all masked.
       ICW1 edge + ICW4, ICW2 vector base, ICW3 cascade on IRQ 2, ICW4 8086 mode. */
    movb $0x11, %al
    outb %al, $0x20
    outb %al, $0xa0
    movb $0x20, %al
    outb %al, $0x21
    movb $0x28, %al
    outb %al, $0xa1
    movb $0x04, %al
    outb %al, $0x21
    movb $0x02, %al
    outb %al, $0xa1
    movb $0x01, %al
    outb %al, $0x21
    outb %al, $0xa1
    movb $0xff, %al
    outb %al, $0x21
    outb %al, $0xa1

    /* The IDT: every vector stops the guest loudly but the three it expects. */
    xorl %ecx, %ecx
2:
    movl $unexpected_isr, %eax
    call set_gate
    incl %ecx
    cmpl $IDT_ENTRIES, %ecx
    jb 2b
    movl $VECTOR_COM1, %ecx
    movl $com1_isr, %eax
    call set_gate
    movl $VECTOR_GED, %ecx
    movl $ged_isr, %eax
    call set_gate
    movl $VECTOR_SPURIOUS, %ecx
    movl $spurious_isr, %eax
    call set_gate
    lidt idt_ptr

    /* The LAPIC: LINT0 (the PIC's ExtINT) masked, accept every priority,
       software-enabled with its spurious vector. */
    movl $0x10000, LAPIC_LVT_LINT0
    movl $0, LAPIC_TPR
    movl $(0x100 | VECTOR_SPURIOUS), LAPIC_SVR

    /* The IOAPIC: GSI 4 and 5 to this CPU (physical destination = our APIC
       id), fixed delivery, edge, active high, unmasked. The high half first,
       so the entry is complete when the low half unmasks it. */
    movl LAPIC_ID, %edx
    andl $0xff000000, %edx
    movl $COM1_GSI, %ecx
    movl $VECTOR_COM1, %eax
    call route_gsi
    movl $GED_GSI, %ecx
    movl $VECTOR_GED, %eax
    call route_gsi

    /* COM1: the received-data interrupt, and OUT2 (gates the IRQ line on a
       real 16550) with DTR and RTS. */
    movw $COM1_MCR, %dx
    movb $0x0b, %al
    outb %al, %dx
    movw $COM1_IER, %dx
    movb $0x01, %al
    outb %al, %dx
    /* Input or a power-button press that came before the IOAPIC entries
       were unmasked raised an edge nobody saw: look once by hand. */
    call echo_input
    call ged_event

    /* Idle. Interrupts are only ever on here, so a handler interrupts
       nothing but this loop: it does its work and comes back to `idle` with a
       fresh stack instead of returning with `iret` (the host's instruction
       emulator cannot execute a protected-mode `iret`). Handlers run through
       interrupt gates, with interrupts off, so they never nest. `sti` holds
       interrupts off for one more instruction: none slips in before `hlt`. */
idle:
    movl $stack_top, %esp
    sti
    hlt
    jmp idle

/* set_gate: IDT entry %ecx -> a 32-bit interrupt gate (interrupts off on entry) to %eax (clobbers %eax, %edx). */
set_gate:
    movl %eax, %edx
    andl $0x0000ffff, %eax
    orl $(CODE_SELECTOR << 16), %eax
    movl %eax, idt(, %ecx, 8)
    andl $0xffff0000, %edx
    orl $0x8e00, %edx
    movl %edx, idt + 4(, %ecx, 8)
    ret

/* route_gsi: IOAPIC redirection entry %ecx -> vector %eax, destination %edx (bits 24-31). */
route_gsi:
    leal 0x11(, %ecx, 2), %ecx
    movl %ecx, IOAPIC_REGSEL
    movl %edx, IOAPIC_WINDOW
    decl %ecx
    movl %ecx, IOAPIC_REGSEL
    movl %eax, IOAPIC_WINDOW
    ret

/* puts: writes the NUL-terminated string at %esi to COM1 (clobbers %eax, %edx, %esi).
   The VMM's UART never fills up, so the line status is not polled. */
puts:
    movw $COM1, %dx
1:
    movb (%esi), %al
    testb %al, %al
    jz 2f
    outb %al, %dx
    incl %esi
    jmp 1b
2:
    ret

/* echo_input: echoes every byte the UART holds (clobbers %eax, %edx). */
echo_input:
    movw $COM1_LSR, %dx
    inb %dx, %al
    testb $1, %al
    jz 3f
    movw $COM1, %dx
    inb %dx, %al
    cmpb $0x0d, %al
    je 1f
    cmpb $0x7f, %al
    je 2f
    cmpb $0x08, %al
    je 2f
    outb %al, %dx
    jmp echo_input
1:
    outb %al, %dx
    movb $0x0a, %al
    outb %al, %dx
    jmp echo_input
2:
    movb $0x08, %al
    outb %al, %dx
    movb $0x20, %al
    outb %al, %dx
    movb $0x08, %al
    outb %al, %dx
    jmp echo_input
3:
    ret

com1_isr:
    call echo_input
    movl $0, LAPIC_EOI
    jmp idle

ged_isr:
    call ged_event
    movl $0, LAPIC_EOI
    jmp idle

/* ged_event: reads (and so clears) the GED event register; on a PCI hotplug
   event ejects the slots whose removal was requested; on a power-button
   press says so and powers off, never returning (clobbers %eax, %ecx, %edx,
   %esi). */
ged_event:
    movw $GED_PORT, %dx
    inb %dx, %al
    testb $GED_PCI_HOTPLUG, %al
    jz 2f
    movb %al, %cl
    movw $HOTPLUG_PCIU, %dx
    inl %dx, %eax
    movw $HOTPLUG_PCID, %dx
    inl %dx, %eax
    movw $HOTPLUG_B0EJ, %dx
    outl %eax, %dx
    movb %cl, %al
2:
    testb $GED_POWER_BUTTON, %al
    jz 1f
    movl $power_msg, %esi
    call puts
    movw $SLEEP_CONTROL_PORT, %dx
    movb $SLEEP_S5, %al
    outb %al, %dx
    /* The VMM ends the VM asynchronously; park until it does. */
    jmp halt_forever
1:
    ret

/* A spurious LAPIC interrupt takes no EOI. */
spurious_isr:
    jmp idle

unexpected_isr:
    movl $unexpected_msg, %esi
    call puts
halt_forever:
    cli
    hlt
    jmp halt_forever

    .section .rodata
    .balign 8
gdt:
    .quad 0
    .quad 0x00cf9a000000ffff
    .quad 0x00cf92000000ffff
gdt_ptr:
    .word 23
    .long gdt
    .balign 8
idt_ptr:
    .word IDT_ENTRIES * 8 - 1
    .long idt
ready_msg:
    .ascii "yunhe echo guest: a tiny PVH kernel built into yunhe\n"
    .ascii "yunhe echo guest: serial input is echoed back\n"
    .ascii "yunhe echo guest: the ACPI power button powers it off\n"
    .asciz "yunhe echo guest: ready\n"
power_msg:
    .asciz "yunhe echo guest: power button, powering off\n"
unexpected_msg:
    .asciz "yunhe echo guest: unexpected exception or interrupt, halted\n"

    .section .bss
    .balign 8
idt:
    .skip IDT_ENTRIES * 8
    .balign 16
    .skip 4096
stack_top:
    "#,
    options(att_syntax)
);

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// The host target's prebuilt `core` refers to this symbol; nothing unwinds here.
#[unsafe(no_mangle)]
extern "C" fn rust_eh_personality() {}
