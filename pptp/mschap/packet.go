package mschap

import (
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
)

// Errors returned by the parsers of MS-CHAPv2 packet fields.
var (
	ErrResponseLen = errors.New("mschap: response value is not 49 octets")
	ErrMessage     = errors.New("mschap: malformed success/failure message")
)

// Failure error codes of RFC 2759 §6.
const (
	ErrRestrictedLogonHours  = 646
	ErrAccountDisabled       = 647
	ErrPasswdExpired         = 648
	ErrNoDialinPermission    = 649
	ErrAuthenticationFailure = 691
	ErrChangingPassword      = 709
)

// Response is the 49-octet Response Value of an MS-CHAPv2 Response packet
// (RFC 2759 §4):
//
//	+----------------------+-------------+--------------------------+-------+
//	| Peer-Challenge (16)  | Reserved (8)| NT-Response (24)         | Flags |
//	+----------------------+-------------+--------------------------+-------+
type Response struct {
	PeerChallenge [16]byte
	NTResponse    [24]byte
	Flags         byte // must be zero
}

// ParseResponse decodes a Response Value. The reserved octets are not
// checked (RFC 2759 says they are zero; a non-zero value is harmless).
func ParseResponse(v []byte) (Response, error) {
	var r Response
	if len(v) != ResponseLen {
		return r, ErrResponseLen
	}
	copy(r.PeerChallenge[:], v[0:16])
	copy(r.NTResponse[:], v[24:48])
	r.Flags = v[48]
	return r, nil
}

// Append appends the 49-octet Response Value to b.
func (r Response) Append(b []byte) []byte {
	b = append(b, r.PeerChallenge[:]...)
	b = append(b, 0, 0, 0, 0, 0, 0, 0, 0)
	b = append(b, r.NTResponse[:]...)
	return append(b, r.Flags)
}

// SuccessMessage builds the Message field of a Success packet (RFC 2759 §5):
// "S=<auth_string> M=<message>".
func SuccessMessage(authResponse, msg string) string {
	return authResponse + " M=" + msg
}

// ParseSuccess splits a Success Message into the 42-octet authenticator
// response and the optional text after " M=".
func ParseSuccess(s string) (authResponse, msg string, err error) {
	if len(s) < AuthRespStrLen || !strings.HasPrefix(s, "S=") {
		return "", "", ErrMessage
	}
	if _, err := hex.DecodeString(s[2:AuthRespStrLen]); err != nil {
		return "", "", ErrMessage
	}
	rest := s[AuthRespStrLen:]
	switch {
	case rest == "":
	case strings.HasPrefix(rest, " M="):
		msg = rest[3:]
	default:
		return "", "", ErrMessage
	}
	return s[:AuthRespStrLen], msg, nil
}

// Failure is the decoded Message of a Failure packet (RFC 2759 §6):
// "E=eeeeeeeeee R=r C=cccccccccccccccccccccccccccccccc V=vvvvvvvvvv M=<msg>".
type Failure struct {
	Code         int
	Retry        bool
	Challenge    [16]byte
	HasChallenge bool
	Version      int
	Message      string
}

// String formats the failure message. Version defaults to 3 (RFC 2759).
func (f Failure) String() string {
	var b strings.Builder
	b.WriteString("E=")
	b.WriteString(strconv.Itoa(f.Code))
	b.WriteString(" R=")
	if f.Retry {
		b.WriteByte('1')
	} else {
		b.WriteByte('0')
	}
	if f.HasChallenge {
		b.WriteString(" C=")
		b.WriteString(strings.ToUpper(hex.EncodeToString(f.Challenge[:])))
	}
	v := f.Version
	if v == 0 {
		v = 3
	}
	b.WriteString(" V=")
	b.WriteString(strconv.Itoa(v))
	if f.Message != "" {
		b.WriteString(" M=")
		b.WriteString(f.Message)
	}
	return b.String()
}

// ParseFailure decodes a Failure Message. Fields other than E= are optional;
// M= runs to the end of the string.
func ParseFailure(s string) (Failure, error) {
	var f Failure
	seenE := false
	for len(s) > 0 {
		if len(s) < 2 || s[1] != '=' {
			return Failure{}, ErrMessage
		}
		key := s[0]
		if key == 'M' {
			f.Message = s[2:]
			break
		}
		val := s[2:]
		if i := strings.IndexByte(val, ' '); i >= 0 {
			val, s = val[:i], val[i+1:]
		} else {
			s = ""
		}
		switch key {
		case 'E':
			n, err := strconv.Atoi(val)
			if err != nil || n < 0 {
				return Failure{}, ErrMessage
			}
			f.Code, seenE = n, true
		case 'R':
			switch val {
			case "0":
			case "1":
				f.Retry = true
			default:
				return Failure{}, ErrMessage
			}
		case 'C':
			c, err := hex.DecodeString(val)
			if err != nil || len(c) != 16 {
				return Failure{}, ErrMessage
			}
			copy(f.Challenge[:], c)
			f.HasChallenge = true
		case 'V':
			n, err := strconv.Atoi(val)
			if err != nil || n < 0 {
				return Failure{}, ErrMessage
			}
			f.Version = n
		default:
			// Unknown field: ignore for forward compatibility.
		}
	}
	if !seenE {
		return Failure{}, ErrMessage
	}
	return f, nil
}
