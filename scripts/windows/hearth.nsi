; Hearth's Windows installer, built with NSIS (makensis) by scripts/windows/installer.sh.
;
; A per-user install (no administrator needed, as a game launcher does): the programs go to
; %LOCALAPPDATA%\Programs\Hearth, a Start menu entry opens the window, and start at login (the
; registry's Run key, the same entry Settings turns on and off) is offered, on by default.
; The uninstaller removes the programs, the entry and the login item; the owner's data folder
; (%APPDATA%\app.hearth.desktop: the earnings ledger, keys, settings) stays unless they ask,
; with /REMOVEDATA on the command line or the uninstaller's checkbox.
;
; makensis -DVERSION=… -DPROGRAMS=<folder of the .exe files> -DOUTFILE=<setup.exe> [-DFAST] hearth.nsi

; A 64-bit installer, for the 64-bit programs it installs (and Wine without 32-bit support).
Target amd64-unicode
!include "MUI2.nsh"
!include "FileFunc.nsh"
!include "LogicLib.nsh"

!ifndef VERSION
  !error "VERSION is not defined"
!endif
!ifndef PROGRAMS
  !error "PROGRAMS is not defined"
!endif
!ifndef OUTFILE
  !define OUTFILE "hearth-setup.exe"
!endif

!define APP_NAME "Hearth"
!define DATA_FOLDER "app.hearth.desktop"
!define RUN_KEY "Software\Microsoft\Windows\CurrentVersion\Run"
!define UNINSTALL_KEY "Software\Microsoft\Windows\CurrentVersion\Uninstall\Hearth"

Name "${APP_NAME}"
OutFile "${OUTFILE}"
RequestExecutionLevel user
InstallDir "$LOCALAPPDATA\Programs\Hearth"
InstallDirRegKey HKCU "Software\Hearth" "InstallDir"
!ifdef FAST
  ; The test command's installer: packed in seconds, not minutes.
  SetCompress off
!else
  SetCompressor /SOLID lzma
!endif
VIProductVersion "${VERSION}.0"
VIAddVersionKey "ProductName" "${APP_NAME}"
VIAddVersionKey "FileVersion" "${VERSION}"
VIAddVersionKey "ProductVersion" "${VERSION}"
VIAddVersionKey "LegalCopyright" "Hearth contributors, Apache-2.0"
VIAddVersionKey "FileDescription" "Hearth: lend your spare GPU to AI inference"

!define MUI_ICON "${__FILEDIR__}\..\..\icons\icon.ico"
!define MUI_UNICON "${__FILEDIR__}\..\..\icons\icon.ico"
!define MUI_FINISHPAGE_RUN "$INSTDIR\hearth-app.exe"
!define MUI_FINISHPAGE_RUN_TEXT "Start Hearth now"
!insertmacro MUI_PAGE_DIRECTORY
!insertmacro MUI_PAGE_COMPONENTS
!insertmacro MUI_PAGE_INSTFILES
!insertmacro MUI_PAGE_FINISH
!insertmacro MUI_UNPAGE_CONFIRM
!insertmacro MUI_UNPAGE_COMPONENTS
!insertmacro MUI_UNPAGE_INSTFILES
!insertmacro MUI_LANGUAGE "English"

Section "Hearth (required)" SecPrograms
  SectionIn RO
  SetOutPath "$INSTDIR"
  File "${PROGRAMS}\hearth-app.exe"
  File "${PROGRAMS}\hearth-tray.exe"
  File "${PROGRAMS}\hearth-node.exe"
  File "${PROGRAMS}\hearth-models.exe"
  ; The window's WebView2 loader, beside it (a MinGW-built window links it at run time).
  File /nonfatal "${PROGRAMS}\WebView2Loader.dll"
  WriteUninstaller "$INSTDIR\uninstall.exe"
  CreateDirectory "$SMPROGRAMS\Hearth"
  CreateShortcut "$SMPROGRAMS\Hearth\Hearth.lnk" "$INSTDIR\hearth-app.exe"
  WriteRegStr HKCU "Software\Hearth" "InstallDir" "$INSTDIR"
  WriteRegStr HKCU "${UNINSTALL_KEY}" "DisplayName" "${APP_NAME}"
  WriteRegStr HKCU "${UNINSTALL_KEY}" "DisplayVersion" "${VERSION}"
  WriteRegStr HKCU "${UNINSTALL_KEY}" "Publisher" "Hearth"
  WriteRegStr HKCU "${UNINSTALL_KEY}" "DisplayIcon" "$INSTDIR\hearth-app.exe"
  WriteRegStr HKCU "${UNINSTALL_KEY}" "UninstallString" '"$INSTDIR\uninstall.exe"'
  WriteRegStr HKCU "${UNINSTALL_KEY}" "QuietUninstallString" '"$INSTDIR\uninstall.exe" /S'
  WriteRegDWORD HKCU "${UNINSTALL_KEY}" "NoModify" 1
  WriteRegDWORD HKCU "${UNINSTALL_KEY}" "NoRepair" 1
SectionEnd

Section "Start Hearth when I log in" SecLogin
  ; The entry Settings' "Start at login" switch reads and writes (hearth-tray's auto-launch).
  WriteRegStr HKCU "${RUN_KEY}" "Hearth" '"$INSTDIR\hearth-app.exe" --in-tray'
SectionEnd

LangString DESC_SecPrograms ${LANG_ENGLISH} "The window, the tray program and the node."
LangString DESC_SecLogin ${LANG_ENGLISH} "Hearth starts in the tray when you log in (Settings can change this later)."
!insertmacro MUI_FUNCTION_DESCRIPTION_BEGIN
  !insertmacro MUI_DESCRIPTION_TEXT ${SecPrograms} $(DESC_SecPrograms)
  !insertmacro MUI_DESCRIPTION_TEXT ${SecLogin} $(DESC_SecLogin)
!insertmacro MUI_FUNCTION_DESCRIPTION_END

Section "un.Hearth" UnSecPrograms
  SectionIn RO
  Delete "$INSTDIR\hearth-app.exe"
  Delete "$INSTDIR\hearth-tray.exe"
  Delete "$INSTDIR\hearth-node.exe"
  Delete "$INSTDIR\hearth-models.exe"
  Delete "$INSTDIR\WebView2Loader.dll"
  Delete "$INSTDIR\uninstall.exe"
  RMDir "$INSTDIR"
  Delete "$SMPROGRAMS\Hearth\Hearth.lnk"
  RMDir "$SMPROGRAMS\Hearth"
  DeleteRegValue HKCU "${RUN_KEY}" "Hearth"
  DeleteRegKey HKCU "${UNINSTALL_KEY}"
  DeleteRegKey HKCU "Software\Hearth"
SectionEnd

Section /o "un.Also remove my earnings ledger, keys and settings" UnSecData
  RMDir /r "$APPDATA\${DATA_FOLDER}"
SectionEnd

Function un.onInit
  ${GetParameters} $0
  ClearErrors
  ${GetOptions} $0 "/REMOVEDATA" $1
  ${IfNot} ${Errors}
    SectionSetFlags ${UnSecData} ${SF_SELECTED}
  ${EndIf}
FunctionEnd
