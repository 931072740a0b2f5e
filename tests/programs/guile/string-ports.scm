;;; Lots of string ports: with-output-to-string, call-with-output-string,
;;; reading back with open-input-string, from several threads at once.
(use-modules (ice-9 threads) (ice-9 rdelim))

(define (render i)
  (with-output-to-string
    (lambda ()
      (display "item ")
      (write i)
      (display ": ")
      (write (list i (* i i) (number->string i 2)))
      (newline))))

(define (checksum-of strings)
  (let loop ((strings strings) (sum 0))
    (if (null? strings)
        sum
        (loop (cdr strings)
              (modulo (+ (* sum 31) (string-hash (car strings))) 1000000007)))))

(define rendered (map render (iota 50000)))
(format #t "rendered: ~a strings, ~a chars~%" (length rendered)
        (apply + (map string-length rendered)))

(define read-back
  (map (lambda (s) (call-with-input-string s (lambda (port) (read-line port) 1))) rendered))
(format #t "read back: ~a~%" (apply + read-back))

(define joined
  (call-with-output-string
    (lambda (port) (for-each (lambda (s) (display s port)) rendered))))
(format #t "joined: ~a chars, ~a lines~%" (string-length joined)
        (let ((port (open-input-string joined)))
          (let loop ((n 0)) (if (eof-object? (read-line port)) n (loop (+ n 1))))))

(define (render-range start count)
  ;; In a thread: a loop into one string port, no deep recursion (see
  ;; threads.scm about Guile 3.0.8 and VM stack growth in threads).
  (call-with-output-string
    (lambda (port)
      (let loop ((i start))
        (when (< i (+ start count))
          (display (render i) port)
          (loop (+ i 1)))))))

(define per-thread
  (map join-thread
       (map (lambda (t) (call-with-new-thread (lambda () (string-length (render-range t 5000)))))
            (iota 4))))
(format #t "threads: ~a~%" per-thread)
