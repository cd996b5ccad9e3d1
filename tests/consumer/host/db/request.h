// The host's own db/request.h, on the consumer's include path. sqloop's headers include each other
// as "sqloop/...", so this file must never be pulled in by them.
#error "a sqloop header included the host's db/request.h"
