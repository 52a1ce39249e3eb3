<#
.SYNOPSIS
  Blit against robocopy on Windows: the table of the seed analysis, reproducible in one command.

.DESCRIPTION
  Builds three datasets (one 512 MiB file, one 256 MiB file, 5,000 small files of 4-64 KiB),
  then for each runs `blit mirror`, `robocopy /MIR` and `robocopy /MIR /MT:8` alternately
  (A B C A B C ...), each into a fresh destination that is emptied outside the timing, and
  prints per tool the median and minimum wall time, throughput, and Blit's ratio to the best
  robocopy. Run it from the repository root after `cargo build --release`:

    powershell -ExecutionPolicy Bypass -File bench\windows.ps1

.PARAMETER Blit      Path to blit.exe (default: target\release\blit.exe).
.PARAMETER Rounds    Rounds per dataset (default 5).
.PARAMETER Work      Scratch folder for datasets and destinations (default: %TEMP%\blit-bench).
#>
param(
    [string]$Blit = "target\release\blit.exe",
    [int]$Rounds = 5,
    [string]$Work = (Join-Path $env:TEMP "blit-bench")
)

$ErrorActionPreference = "Stop"
$Blit = (Resolve-Path $Blit).Path
New-Item -ItemType Directory -Force -Path $Work | Out-Null

function New-RandomFile([string]$Path, [long]$Bytes) {
    if ((Test-Path $Path) -and ((Get-Item $Path).Length -eq $Bytes)) { return }
    $rng = [System.Random]::new(42)
    $buf = New-Object byte[] (4MB)
    $fs = [System.IO.File]::Create($Path)
    try {
        $left = $Bytes
        while ($left -gt 0) {
            $rng.NextBytes($buf)
            $n = [Math]::Min($left, $buf.Length)
            $fs.Write($buf, 0, $n)
            $left -= $n
        }
    } finally { $fs.Close() }
}

function New-Dataset([string]$Name) {
    $dir = Join-Path $Work "src-$Name"
    if (Test-Path (Join-Path $dir ".complete")) { return $dir }
    if (Test-Path $dir) { Remove-Item -Recurse -Force $dir }
    New-Item -ItemType Directory -Path $dir | Out-Null
    switch ($Name) {
        "512MiB" { New-RandomFile (Join-Path $dir "payload.bin") 512MB }
        "256MiB" { New-RandomFile (Join-Path $dir "payload.bin") 256MB }
        "small" {
            $rng = [System.Random]::new(7)
            for ($d = 0; $d -lt 50; $d++) {
                $sub = Join-Path $dir ("d{0:D3}" -f $d)
                New-Item -ItemType Directory -Path $sub | Out-Null
                for ($f = 0; $f -lt 100; $f++) {
                    $size = $rng.Next(4KB, 64KB)
                    $buf = New-Object byte[] $size
                    $rng.NextBytes($buf)
                    [System.IO.File]::WriteAllBytes((Join-Path $sub ("f{0:D3}.dat" -f $f)), $buf)
                }
            }
        }
    }
    New-Item -ItemType File -Path (Join-Path $dir ".complete") | Out-Null
    return $dir
}

function Get-TreeBytes([string]$Dir) {
    (Get-ChildItem -Recurse -File $Dir | Measure-Object -Sum Length).Sum
}

function Invoke-Timed([scriptblock]$Run) {
    $sw = [System.Diagnostics.Stopwatch]::StartNew()
    & $Run
    $sw.Stop()
    return $sw.Elapsed.TotalSeconds
}

$tools = [ordered]@{
    "blit mirror"          = { param($s, $d) & $Blit mirror -q --no-progress $s $d; if ($LASTEXITCODE -ne 0) { throw "blit exited $LASTEXITCODE" } }
    "robocopy /MIR"        = { param($s, $d) robocopy $s $d /MIR /NFL /NDL /NJH /NJS /NP /R:0 /W:0 | Out-Null; if ($LASTEXITCODE -ge 8) { throw "robocopy exited $LASTEXITCODE" } }
    "robocopy /MIR /MT:8"  = { param($s, $d) robocopy $s $d /MIR /MT:8 /NFL /NDL /NJH /NJS /NP /R:0 /W:0 | Out-Null; if ($LASTEXITCODE -ge 8) { throw "robocopy exited $LASTEXITCODE" } }
}

$report = @()
foreach ($name in @("512MiB", "256MiB", "small")) {
    $src = New-Dataset $name
    $bytes = Get-TreeBytes $src
    $times = @{}
    foreach ($t in $tools.Keys) { $times[$t] = @() }
    for ($r = 0; $r -lt $Rounds; $r++) {
        foreach ($t in $tools.Keys) {
            $dst = Join-Path $Work "dst"
            if (Test-Path $dst) { Remove-Item -Recurse -Force $dst }   # outside the timing
            Get-ChildItem -Recurse -File $src | ForEach-Object { [System.IO.File]::ReadAllBytes($_.FullName) | Out-Null } # warm the cache
            $run = $tools[$t]
            $times[$t] += Invoke-Timed { & $run $src $dst }
        }
    }
    Write-Host ""
    Write-Host "## $name ($([Math]::Round($bytes / 1MB)) MiB)"
    $med = @{}
    foreach ($t in $tools.Keys) {
        $sorted = $times[$t] | Sort-Object
        $m = $sorted[[int][Math]::Floor($sorted.Count / 2)]
        $med[$t] = $m
        $mibs = [Math]::Round($bytes / 1MB / $m)
        Write-Host ("  {0,-22} median {1,7:N3} s  min {2,7:N3} s  {3,6} MiB/s" -f $t, $m, $sorted[0], $mibs)
        $report += [pscustomobject]@{ Dataset = $name; Tool = $t; MedianSec = $m; MinSec = $sorted[0]; MiBps = $mibs }
    }
    $best = [Math]::Min($med["robocopy /MIR"], $med["robocopy /MIR /MT:8"])
    Write-Host ("  blit / best robocopy: {0:N2}" -f ($med["blit mirror"] / $best))
}
$out = Join-Path $Work "results.csv"
$report | Export-Csv -NoTypeInformation -Path $out
Write-Host "`nwrote $out"
