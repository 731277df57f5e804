/*
 * Wine 8.0 lacks bcryptprimitives.dll, from which Rust's standard library (1.78 and later)
 * imports ProcessPrng, so no Rust program starts under it. This stand-in, placed beside the
 * program, answers ProcessPrng from the system's random number generator through bcrypt.dll,
 * as the real one does. Tests only: Windows itself has the real DLL.
 */
#include <windows.h>
#include <bcrypt.h>

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length) {
    return BCryptGenRandom(NULL, data, (ULONG)length, BCRYPT_USE_SYSTEM_PREFERRED_RNG) == 0;
}
