#!/bin/sh
if [ "$1" = "--check" ]; then exit 0; fi
echo "$GREETING, ${1:-world}"
