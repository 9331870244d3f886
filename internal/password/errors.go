package password

import "errors"

// ErrMalformed means a stored hash is not an argon2id PHC string this package
// accepts: wrong shape, wrong version, bad base64, or absurd parameters.
var ErrMalformed = errors.New("password: malformed argon2id hash")
