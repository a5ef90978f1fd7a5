//! The C ABI called directly (null pointers, bad lengths, the length-query
//! convention, uninitialised calls, vendor-number overrides). Uses the rlib's
//! own copy of the entry points, so its module state is separate from the
//! cdylib the other tests load.
#![allow(unsafe_code, clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::ptr::{null, null_mut};

use cryptoki_sys::*;
use hsm_sim::ffi;

fn attr<T>(t: CK_ATTRIBUTE_TYPE, v: &T) -> CK_ATTRIBUTE {
    CK_ATTRIBUTE { type_: t, pValue: v as *const T as *mut _, ulValueLen: std::mem::size_of::<T>() as u64 }
}

fn battr(t: CK_ATTRIBUTE_TYPE, v: &[u8]) -> CK_ATTRIBUTE {
    CK_ATTRIBUTE { type_: t, pValue: v.as_ptr() as *mut _, ulValueLen: v.len() as u64 }
}

#[test]
fn raw_abi() {
    let _dir = common::write_config(1, "[vendor]\nsm4_ecb = 0x80000B11\nckk_sm4 = 0x80000B00\n");
    // SAFETY (whole test): every pointer passed below is either null on
    // purpose or points to live stack/heap memory of the declared size.
    unsafe {
        let mut list: *mut CK_FUNCTION_LIST = null_mut();
        assert_eq!(ffi::C_GetFunctionList(&mut list), CKR_OK);
        assert_eq!(ffi::C_GetFunctionList(null_mut()), CKR_ARGUMENTS_BAD);
        let f = &*list;
        assert_eq!(f.version.major, 2);
        // PKCS#11 3.0 interface discovery hands out the same 2.40 list.
        let mut ifc: *mut CK_INTERFACE = null_mut();
        assert_eq!(ffi::C_GetInterface(null_mut(), null_mut(), &mut ifc, 0), CKR_OK);
        assert_eq!((*ifc).pFunctionList as *mut CK_FUNCTION_LIST, list);
        let mut name = *b"PKCS 11\0";
        assert_eq!(ffi::C_GetInterface(name.as_mut_ptr(), null_mut(), &mut ifc, 0), CKR_OK);
        let mut other = *b"Vendor\0";
        assert_eq!(ffi::C_GetInterface(other.as_mut_ptr(), null_mut(), &mut ifc, 0), CKR_ARGUMENTS_BAD);
        let mut v3 = CK_VERSION { major: 3, minor: 0 };
        assert_eq!(ffi::C_GetInterface(null_mut(), &mut v3, &mut ifc, 0), CKR_ARGUMENTS_BAD);
        let mut count: CK_ULONG = 0;
        assert_eq!(ffi::C_GetInterfaceList(null_mut(), &mut count), CKR_OK);
        assert_eq!(count, 1);
        let mut n: CK_ULONG = 0;
        assert_eq!(ffi::C_GetSlotList(0, null_mut(), &mut n), CKR_CRYPTOKI_NOT_INITIALIZED);
        // Mixed mutex callbacks are rejected; null args accepted.
        let bad = CK_C_INITIALIZE_ARGS {
            CreateMutex: None,
            DestroyMutex: None,
            LockMutex: None,
            UnlockMutex: None,
            flags: CKF_OS_LOCKING_OK,
            pReserved: std::ptr::dangling_mut(),
        };
        assert_eq!(ffi::C_Initialize(&bad as *const _ as *mut _), CKR_ARGUMENTS_BAD);
        assert_eq!((f.C_Initialize.unwrap())(null_mut()), CKR_OK);
        assert_eq!(ffi::C_Initialize(null_mut()), CKR_CRYPTOKI_ALREADY_INITIALIZED);

        // Length-query convention on lists.
        assert_eq!(ffi::C_GetSlotList(0, null_mut(), null_mut()), CKR_ARGUMENTS_BAD);
        assert_eq!(ffi::C_GetSlotList(0, null_mut(), &mut n), CKR_OK);
        assert_eq!(n, 1);
        let mut slots = [0u64; 4];
        let mut zero: CK_ULONG = 0;
        assert_eq!(ffi::C_GetSlotList(0, slots.as_mut_ptr(), &mut zero), CKR_BUFFER_TOO_SMALL);
        assert_eq!(zero, 1);
        assert_eq!(ffi::C_GetSlotInfo(99, &mut std::mem::zeroed()), CKR_SLOT_ID_INVALID);
        assert_eq!(ffi::C_GetTokenInfo(0, null_mut()), CKR_ARGUMENTS_BAD);

        // Token setup.
        let mut label = [b' '; 32];
        label[..3].copy_from_slice(b"raw");
        let so = b"so-pin-1234";
        assert_eq!(ffi::C_InitToken(0, so.as_ptr() as *mut _, so.len() as u64, label.as_mut_ptr()), CKR_OK);
        assert_eq!(ffi::C_InitToken(0, null_mut(), 4, label.as_mut_ptr()), CKR_ARGUMENTS_BAD);
        let mut h: CK_SESSION_HANDLE = 0;
        assert_eq!(ffi::C_OpenSession(0, CKF_RW_SESSION, null_mut(), None, &mut h), CKR_SESSION_PARALLEL_NOT_SUPPORTED);
        assert_eq!(
            ffi::C_OpenSession(0, CKF_SERIAL_SESSION | CKF_RW_SESSION, null_mut(), None, null_mut()),
            CKR_ARGUMENTS_BAD
        );
        assert_eq!(ffi::C_OpenSession(0, CKF_SERIAL_SESSION | CKF_RW_SESSION, null_mut(), None, &mut h), CKR_OK);
        assert_eq!(ffi::C_Login(h, CKU_SO, so.as_ptr() as *mut _, so.len() as u64), CKR_OK);
        let user = b"user-1234";
        assert_eq!(ffi::C_InitPIN(h, b"ab".as_ptr() as *mut _, 2), CKR_PIN_LEN_RANGE);
        assert_eq!(ffi::C_InitPIN(h, user.as_ptr() as *mut _, user.len() as u64), CKR_OK);
        assert_eq!(ffi::C_Logout(h), CKR_OK);
        assert_eq!(ffi::C_Login(h, 7, user.as_ptr() as *mut _, user.len() as u64), CKR_USER_TYPE_INVALID);
        assert_eq!(ffi::C_Login(h, CKU_USER, user.as_ptr() as *mut _, user.len() as u64), CKR_OK);
        assert_eq!(
            ffi::C_Login(h + 1000, CKU_USER, user.as_ptr() as *mut _, user.len() as u64),
            CKR_SESSION_HANDLE_INVALID
        );

        // An SM4 key under the overridden vendor key type.
        let class = CKO_SECRET_KEY;
        let ktype: CK_KEY_TYPE = 0x8000_0B00;
        let value = [0x01u8, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54, 0x32, 0x10];
        let tru: CK_BBOOL = 1;
        let tmpl =
            [attr(CKA_CLASS, &class), attr(CKA_KEY_TYPE, &ktype), battr(CKA_VALUE, &value), attr(CKA_ENCRYPT, &tru)];
        let mut k: CK_OBJECT_HANDLE = 0;
        assert_eq!(ffi::C_CreateObject(h, tmpl.as_ptr() as *mut _, 4, &mut k), CKR_OK);
        assert_eq!(ffi::C_CreateObject(h, null_mut(), 4, &mut k), CKR_ARGUMENTS_BAD);
        // A CK_BBOOL attribute of the wrong size.
        let wide: u32 = 1;
        let bad_t =
            [attr(CKA_CLASS, &class), attr(CKA_KEY_TYPE, &ktype), battr(CKA_VALUE, &value), attr(CKA_ENCRYPT, &wide)];
        let mut k2 = 0;
        assert_eq!(ffi::C_CreateObject(h, bad_t.as_ptr() as *mut _, 4, &mut k2), CKR_ATTRIBUTE_VALUE_INVALID);

        // GetAttributeValue: sensitive value, invalid type, size query, too small.
        let mut buf = [0u8; 3];
        let mut q = [
            CK_ATTRIBUTE { type_: CKA_VALUE, pValue: null_mut(), ulValueLen: 0 },
            CK_ATTRIBUTE { type_: CKA_MODULUS, pValue: null_mut(), ulValueLen: 0 },
            CK_ATTRIBUTE { type_: CKA_CHECK_VALUE, pValue: null_mut(), ulValueLen: 0 },
            CK_ATTRIBUTE { type_: CKA_LABEL, pValue: buf.as_mut_ptr().cast(), ulValueLen: 3 },
        ];
        let rv = ffi::C_GetAttributeValue(h, k, q.as_mut_ptr(), 4);
        assert!(rv == CKR_ATTRIBUTE_SENSITIVE || rv == CKR_ATTRIBUTE_TYPE_INVALID);
        assert_eq!(q[0].ulValueLen, CK_UNAVAILABLE_INFORMATION);
        assert_eq!(q[1].ulValueLen, CK_UNAVAILABLE_INFORMATION);
        assert_eq!(q[2].ulValueLen, 3);
        assert_eq!(q[3].ulValueLen, 0, "empty label fits");
        let mut kcv = [0u8; 2];
        let mut q2 = [CK_ATTRIBUTE { type_: CKA_CHECK_VALUE, pValue: kcv.as_mut_ptr().cast(), ulValueLen: 2 }];
        assert_eq!(ffi::C_GetAttributeValue(h, k, q2.as_mut_ptr(), 1), CKR_BUFFER_TOO_SMALL);
        assert_eq!(q2[0].ulValueLen, CK_UNAVAILABLE_INFORMATION);
        let mut kcv3 = [0u8; 3];
        let mut q3 = [CK_ATTRIBUTE { type_: CKA_CHECK_VALUE, pValue: kcv3.as_mut_ptr().cast(), ulValueLen: 3 }];
        assert_eq!(ffi::C_GetAttributeValue(h, k, q3.as_mut_ptr(), 1), CKR_OK);
        assert_eq!(kcv3, [0x26, 0x77, 0xF4], "VECTORS.md SM4 KCV");
        assert_eq!(ffi::C_GetAttributeValue(h, k + 77, q3.as_mut_ptr(), 1), CKR_OBJECT_HANDLE_INVALID);
        assert_eq!(ffi::C_GetAttributeValue(h, k, null_mut(), 1), CKR_ARGUMENTS_BAD);

        // Vendor override: SM4-ECB answers at 0x80000B11, not at the default.
        let mut mech = CK_MECHANISM { mechanism: 0x8000_0B11, pParameter: null_mut(), ulParameterLen: 0 };
        assert_eq!(ffi::C_EncryptInit(h, &mut mech, k), CKR_OK);
        let mut out = [0u8; 16];
        let mut out_len: CK_ULONG = 0;
        // Length query, then too small, then the real call (op stays active).
        assert_eq!(ffi::C_Encrypt(h, value.as_ptr() as *mut _, 16, null_mut(), &mut out_len), CKR_OK);
        assert_eq!(out_len, 16);
        out_len = 8;
        assert_eq!(
            ffi::C_Encrypt(h, value.as_ptr() as *mut _, 16, out.as_mut_ptr(), &mut out_len),
            CKR_BUFFER_TOO_SMALL
        );
        assert_eq!(out_len, 16);
        assert_eq!(ffi::C_Encrypt(h, value.as_ptr() as *mut _, 16, out.as_mut_ptr(), &mut out_len), CKR_OK);
        assert_eq!(out[..4], [0x68, 0x1E, 0xDF, 0x34]);
        assert_eq!(
            ffi::C_Encrypt(h, value.as_ptr() as *mut _, 16, out.as_mut_ptr(), &mut out_len),
            CKR_OPERATION_NOT_INITIALIZED
        );
        let mut old =
            CK_MECHANISM { mechanism: hsm_sim::vendor::CKM_SM4_ECB, pParameter: null_mut(), ulParameterLen: 0 };
        assert_eq!(ffi::C_EncryptInit(h, &mut old, k), CKR_MECHANISM_INVALID);
        let mut info: CK_MECHANISM_INFO = std::mem::zeroed();
        assert_eq!(ffi::C_GetMechanismInfo(0, 0x8000_0B11, &mut info), CKR_OK);
        assert_ne!(info.flags & CKF_ENCRYPT, 0);
        assert_eq!(ffi::C_GetMechanismInfo(0, hsm_sim::vendor::CKM_SM4_ECB, &mut info), CKR_MECHANISM_INVALID);

        // Mechanism parameters of the wrong size.
        let iv = [0u8; 15];
        let mut cbc = CK_MECHANISM { mechanism: CKM_AES_CBC, pParameter: iv.as_ptr() as *mut _, ulParameterLen: 15 };
        let aes_t: CK_KEY_TYPE = CKK_AES;
        let tmpl =
            [attr(CKA_CLASS, &class), attr(CKA_KEY_TYPE, &aes_t), battr(CKA_VALUE, &value), attr(CKA_ENCRYPT, &tru)];
        let mut ak = 0;
        assert_eq!(ffi::C_CreateObject(h, tmpl.as_ptr() as *mut _, 4, &mut ak), CKR_OK);
        assert_eq!(ffi::C_EncryptInit(h, &mut cbc, ak), CKR_MECHANISM_PARAM_INVALID);
        let short: u32 = 4;
        let mut general = CK_MECHANISM {
            mechanism: CKM_AES_CMAC_GENERAL,
            pParameter: &short as *const u32 as *mut _,
            ulParameterLen: 4,
        };
        assert_eq!(ffi::C_SignInit(h, &mut general, ak), CKR_MECHANISM_PARAM_INVALID);
        let mut kd = CK_KEY_DERIVATION_STRING_DATA { pData: null_mut(), ulLen: 16 };
        let mut der = CK_MECHANISM {
            mechanism: CKM_AES_ECB_ENCRYPT_DATA,
            pParameter: &mut kd as *mut _ as *mut _,
            ulParameterLen: std::mem::size_of::<CK_KEY_DERIVATION_STRING_DATA>() as u64,
        };
        let mut dk = 0;
        assert_eq!(ffi::C_DeriveKey(h, &mut der, ak, null_mut(), 0, &mut dk), CKR_MECHANISM_PARAM_INVALID);
        assert_eq!(ffi::C_EncryptInit(h, null_mut(), ak), CKR_ARGUMENTS_BAD);
        assert_eq!(ffi::C_DecryptUpdate(h, null_mut(), 0, null_mut(), null_mut()), CKR_ARGUMENTS_BAD);
        assert_eq!(ffi::C_SignFinal(h, null_mut(), &mut out_len), CKR_OPERATION_NOT_INITIALIZED);
        assert_eq!(ffi::C_GenerateRandom(h, null_mut(), 8), CKR_ARGUMENTS_BAD);
        assert_eq!(ffi::C_GetOperationState(h, null_mut(), null_mut()), CKR_FUNCTION_NOT_SUPPORTED);
        assert_eq!(ffi::C_SeedRandom(h, null_mut(), 0), CKR_RANDOM_SEED_NOT_SUPPORTED);
        let _ = null::<u8>();

        // Session teardown: handles become invalid, session objects vanish.
        assert_eq!(ffi::C_CloseSession(h), CKR_OK);
        assert_eq!(ffi::C_CloseSession(h), CKR_SESSION_HANDLE_INVALID);
        assert_eq!(ffi::C_Finalize(null_mut()), CKR_OK);
        assert_eq!(ffi::C_Finalize(null_mut()), CKR_CRYPTOKI_NOT_INITIALIZED);
    }
}
