/*
 * A stand-in for a game on Windows: a program that waits until it is ended. The tests build it
 * with MinGW-w64 and start it under Wine with a game's name, in a game library's folder.
 */
#include <windows.h>

int main(void) {
    Sleep(INFINITE);
    return 0;
}
