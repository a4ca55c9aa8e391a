//! A minimal PVH guest: prints one line on COM1 from 32-bit protected mode and
//! halts. Used as the "minimal PVH guest" of the start-up benchmark, under
//! yunhe and under QEMU microvm alike.

#![no_std]
#![no_main]

core::arch::global_asm!(
    r#"
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
    movl $hello_msg, %esi
    movw $0x3f8, %dx
1:
    movb (%esi), %al
    testb %al, %al
    jz 2f
    outb %al, %dx
    incl %esi
    jmp 1b
2:
    movb $0x41, %al
    outb %al, $0x80
3:
    hlt
    jmp 3b

    .section .rodata
hello_msg:
    .asciz "Hello from a minimal PVH guest\n"
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
