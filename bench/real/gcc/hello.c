/* The program of bench/build-real.sh's "gcc" case; its one-file-changed rebuild rewrites EDIT. */
#include <stdio.h>

#define EDIT ""

int main(void) {
    printf("berth bench hello%s\n", EDIT);
    return 0;
}
